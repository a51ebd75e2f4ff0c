"""TorchScript: scripted loss, scripted trainer modules, and saved modules in a fresh process.

The op's autograd kernel is C++, so a scripted module that calls it trains
(backward included) wherever the op library is loaded: here in this process,
and in a fresh Python process that only ``torch.ops.load_library``s the
library without importing the package (no Python-side registration involved).
"""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import Tensor

import hybrid_entropy_ext as hee
from hybrid_entropy_ext import _ops
from common_utils import LinearDecay, TinyHybridPolicy, assert_outputs_close, module_outputs_and_grads
from oracle import KEYS as LOSS_KEYS
from op_variants import FUSED_OP_VARIANTS

# TorchScript support is part of the contract, so its deprecation notice is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")


# --------------------------------------------------------------------------------------
# torch.jit.script(hee.hybrid_entropy_loss)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted_loss():
    return torch.jit.script(hee.hybrid_entropy_loss)


def _loss_case(name):
    logits = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    log_std = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    coeff = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    if name == "tensor_coeff_penalties_active":
        return (logits, log_std, coeff, 1.5, 0.3, 2.0, 6.0, 4.0)
    if name == "float_coeff_default_arguments":
        return (logits, log_std, 0.07)
    if name == "shared_log_std_thresholds_none":
        shared = torch.randn(3, dtype=torch.float64, requires_grad=True)
        return (logits, shared, coeff, 1.0, 0.5, None, None, 3.0)
    raise AssertionError(name)


def _assert_scripted_loss_gives_eager_values_and_gradients(scripted_loss, args):
    leaves = [a for a in args if isinstance(a, Tensor)]

    got = scripted_loss(*args)
    got_grads = torch.autograd.grad(got["total"], leaves)
    expected = hee.hybrid_entropy_loss(*args)
    expected_grads = torch.autograd.grad(expected["total"], leaves)

    assert set(got) == set(LOSS_KEYS)
    assert_outputs_close({k: v.detach() for k, v in got.items()}, {k: v.detach() for k, v in expected.items()})
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize(
    "case",
    [
        "tensor_coeff_penalties_active",
        "float_coeff_default_arguments",
        "shared_log_std_thresholds_none",
    ],
)
def test_scripted_loss_gives_eager_values_and_gradients(scripted_loss, case):
    _assert_scripted_loss_gives_eager_values_and_gradients(scripted_loss, _loss_case(case))


@pytest.mark.parametrize("variant", FUSED_OP_VARIANTS, ids=str)
def test_scripted_loss_gives_eager_values_and_gradients_for_every_variant(scripted_loss, variant):
    # Penalties active (thresholds above the entropies): every term enters the gradients.
    sample = variant.sample_inputs(7, 5, 3, torch.float64, requires_grad=True)
    _assert_scripted_loss_gives_eager_values_and_gradients(scripted_loss, (*sample, 1.0, 0.5, 2.0, 6.0, 3.0))


def test_scripted_loss_accepts_keyword_arguments(scripted_loss):
    logits, log_std = torch.randn(5, 4), torch.randn(5, 2)
    got = scripted_loss(logits, log_std, 0.02, penalty_multiplier=5.0, min_entropy_threshold=3.0)
    expected = hee.hybrid_entropy_loss(logits, log_std, 0.02, 1.0, 0.5, 3.0, 0.1, 5.0)
    assert_outputs_close(got, expected)
    assert float(got["discrete_penalty"]) > 0.0


# --------------------------------------------------------------------------------------
# a scripted trainer module: tiny policy + HybridEntropyRegularizer
# --------------------------------------------------------------------------------------


def test_scripted_policy_with_regularizer_gives_eager_values_and_gradients():
    policy = TinyHybridPolicy()
    scripted = torch.jit.script(policy)
    obs = torch.randn(10, 6)

    got_out, got_grads = module_outputs_and_grads(scripted, lambda: scripted(obs, 40))
    expected_out, expected_grads = module_outputs_and_grads(policy, lambda: policy(obs, 40))

    assert set(got_out) == set(LOSS_KEYS) | {"current_entropy_coeff"}
    assert_outputs_close(got_out, expected_out)
    assert set(got_grads) == {"body.0.weight", "body.0.bias", "logits_head.weight", "logits_head.bias", "log_std"}
    assert_outputs_close(got_grads, expected_grads)
    assert all(bool(g.abs().sum() > 0) for g in got_grads.values())


REGULARIZER_CONFIGS = {
    "linear_long": hee.EntropyRegularizationConfig.preset("long"),
    "constant": hee.EntropyRegularizationConfig(enable_adaptive_entropy=False, entropy_coeff=0.02),
}


@pytest.mark.parametrize("config_name", sorted(REGULARIZER_CONFIGS))
@pytest.mark.parametrize("episode", [0, 1, 250, 499, 500, 10_000])
def test_scripted_regularizer_coefficient_matches_eager(config_name, episode):
    regularizer = hee.HybridEntropyRegularizer(REGULARIZER_CONFIGS[config_name])
    scripted_policy = torch.jit.script(TinyHybridPolicy(regularizer))

    expected = regularizer.compute_adaptive_entropy_coefficient(episode)
    got = scripted_policy.regularizer.compute_adaptive_entropy_coefficient(episode)

    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12, abs=0.0)
    out = scripted_policy(torch.randn(3, 6), episode)
    assert float(out["current_entropy_coeff"]) == pytest.approx(expected, rel=1e-6)


def test_scripted_regularizer_rejects_negative_episode():
    scripted = torch.jit.script(hee.HybridEntropyRegularizer())
    with pytest.raises(torch.jit.Error, match="episode"):
        scripted.compute_adaptive_entropy_coefficient(-1)


@pytest.mark.parametrize("from_counter", [False, True], ids=["explicit-episode", "counter"])
def test_scripted_regularizer_rejects_a_user_schedule_gone_negative_as_eager_does(from_counter):
    # Scripted, the schedule is typed to return a float, but not a non-negative one.
    regularizer = hee.HybridEntropyRegularizer(schedule=LinearDecay())
    regularizer.step(10)
    logits, log_std = torch.randn(4, 6), torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"schedule\(10\): expected a finite number >= 0, got -0\.05"):
        regularizer(logits, log_std) if from_counter else regularizer(logits, log_std, 10)
    scripted = torch.jit.script(regularizer)
    with pytest.raises(torch.jit.Error, match=r"schedule\(10\): expected a finite number >= 0, got -0\.05"):
        scripted(logits, log_std) if from_counter else scripted(logits, log_std, 10)
    assert float(scripted(logits, log_std, 2)["current_entropy_coeff"]) == pytest.approx(0.03)


# --------------------------------------------------------------------------------------
# torch.jit.save -> torch.jit.load in a fresh Python process
# --------------------------------------------------------------------------------------

FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import torch

    how, library, module_path, inputs_path, result_path = sys.argv[1:]
    if how == "import_package":
        import hybrid_entropy_ext  # noqa: F401
    elif how == "load_library":
        torch.ops.load_library(library)
    else:
        assert how == "nothing", how

    module = torch.jit.load(module_path)
    inputs = torch.load(inputs_path)
    out = module(inputs["obs"], inputs["episode"])
    out["total"].backward()
    torch.save(
        {
            "outputs": {k: v.detach() for k, v in out.items()},
            "grads": {name: p.grad for name, p in module.named_parameters()},
            "package_imported": "hybrid_entropy_ext" in sys.modules,
        },
        result_path,
    )
    """
)


@pytest.fixture
def saved_policy(tmp_path):
    """A scripted policy saved with torch.jit.save, its inputs, and what it computes here."""
    scripted = torch.jit.script(TinyHybridPolicy())
    module_path = tmp_path / "policy.pt"
    scripted.save(str(module_path))
    inputs = {"obs": torch.randn(12, 6), "episode": 25}
    inputs_path = tmp_path / "inputs.pt"
    torch.save(inputs, inputs_path)
    expected = module_outputs_and_grads(scripted, lambda: scripted(inputs["obs"], inputs["episode"]))
    return module_path, inputs_path, expected


def _run_fresh_process(how, module_path, inputs_path, tmp_path):
    result_path = tmp_path / f"result_{how}.pt"
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, how, _ops.library_path(), str(module_path),
         str(inputs_path), str(result_path)],
        cwd=tmp_path,  # not the repository: nothing importable by accident
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, result_path


@pytest.mark.parametrize("how", ["import_package", "load_library"])
def test_saved_module_trains_identically_in_fresh_process(saved_policy, tmp_path, how):
    module_path, inputs_path, (expected_out, expected_grads) = saved_policy

    proc, result_path = _run_fresh_process(how, module_path, inputs_path, tmp_path)

    assert proc.returncode == 0, proc.stderr
    result = torch.load(result_path)
    assert result["package_imported"] == (how == "import_package")
    assert_outputs_close(result["outputs"], expected_out)
    assert_outputs_close(result["grads"], expected_grads)


def test_saved_module_needs_the_op_library_in_fresh_process(saved_policy, tmp_path):
    # The control for the test above: without the library the op is unknown, so the
    # load_library run really got the op (and its C++ autograd) from that library.
    module_path, inputs_path, _ = saved_policy

    proc, result_path = _run_fresh_process("nothing", module_path, inputs_path, tmp_path)

    assert proc.returncode != 0
    assert "Unknown builtin op: hybrid_entropy_ext::hybrid_entropy_loss" in proc.stderr
    assert not result_path.exists()
