"""The package's flat module paths keep working beside the layered ones.

``hybrid_entropy_ext.schedule``, ``.config``, ``.controller``, ``.regularizer``,
``.monitor``, ``.functional`` and ``.distributions`` are the modules of the layers under
the names code and pickles written against the flat package use: the same module
objects, importable and as attributes of the package. ``.reference`` re-exports the
reference's names.
``tests/data/regularizers_saved_by_flat_modules.pt`` holds regularizers pickled whole
(``torch.save(module)``) by the flat package, whose classes it names by those paths.
"""

import functools
import importlib
import pathlib

import pytest
import torch

import hybrid_entropy_ext as hee

FLAT_PATHS = {
    "schedule": "hybrid_entropy_ext.regularization.schedule",
    "config": "hybrid_entropy_ext.regularization.config",
    "controller": "hybrid_entropy_ext.regularization.controller",
    "regularizer": "hybrid_entropy_ext.regularization.regularizer",
    "monitor": "hybrid_entropy_ext.regularization.monitor",
    "functional": "hybrid_entropy_ext.ops.loss",
    "distributions": "hybrid_entropy_ext.ops.distributions",
}
SAVED = pathlib.Path(__file__).parent / "data" / "regularizers_saved_by_flat_modules.pt"


@pytest.mark.parametrize("name", sorted(FLAT_PATHS))
def test_a_flat_path_is_the_layered_module_itself(name):
    flat = importlib.import_module(f"hybrid_entropy_ext.{name}")
    assert flat is importlib.import_module(FLAT_PATHS[name])
    assert getattr(hee, name) is flat


@pytest.mark.parametrize("name, layered", [("benchmark", "hybrid_entropy_ext.benchmarking.runner"),
                                           ("benchmark_cuda", "hybrid_entropy_ext.benchmarking.cuda")])
def test_the_benchmark_modules_keep_their_flat_paths(name, layered):
    assert importlib.import_module(f"hybrid_entropy_ext.{name}") is importlib.import_module(layered)


def test_the_reference_path_holds_the_references_names():
    from hybrid_entropy_ext.ops import reference as layered

    assert hee.reference.__all__ == layered.__all__
    for name in layered.__all__:
        assert getattr(hee.reference, name) is getattr(layered, name), name


def test_names_imported_from_flat_paths_are_the_public_ones():
    from hybrid_entropy_ext.functional import hybrid_entropy_loss
    from hybrid_entropy_ext.schedule import LinearEntropySchedule

    assert hybrid_entropy_loss is hee.hybrid_entropy_loss
    assert LinearEntropySchedule is hee.LinearEntropySchedule


def rebuilt_like_the_saved_ones():
    short = hee.EntropyRegularizationConfig.preset("short")
    regs = {
        "short_preset": hee.HybridEntropyRegularizer(short),
        "callable_schedule": hee.HybridEntropyRegularizer(short, schedule=functools.partial(min, 0.02)),
        "cosine_with_controller": hee.HybridEntropyRegularizer(
            entropy_schedule="cosine", discrete_controller=hee.TargetEntropyController(0.5, "sac")),
    }
    for reg in regs.values():
        reg.step(3)
    return regs


@pytest.mark.parametrize("name", ["short_preset", "callable_schedule", "cosine_with_controller"])
def test_a_regularizer_pickled_by_the_flat_package_loads_and_computes_the_same(name):
    saved = torch.load(SAVED, weights_only=False)[name]
    rebuilt = rebuilt_like_the_saved_ones()[name]
    assert type(saved) is hee.HybridEntropyRegularizer
    torch.manual_seed(0)
    logits, log_std = torch.randn(16, 5), 0.3 * torch.randn(16, 2)
    got, want = saved(logits, log_std), rebuilt(logits, log_std)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
