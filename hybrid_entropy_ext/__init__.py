"""hybrid_entropy_ext: adaptive, fused entropy regularization for hybrid-action policies.

    import hybrid_entropy_ext as hee

    out = hee.hybrid_entropy_loss(logits, log_std, entropy_coeff)   # fused op
    ref = hee.reference.hybrid_entropy_loss(logits, log_std, entropy_coeff)
    reg = hee.HybridEntropyRegularizer(hee.EntropyRegularizationConfig.preset("long"))
    out = hee.hybrid_entropy_loss_from_distributions((Categorical(...), Normal(...)), 0.01)

Layers, each importing only those below it: the application (:mod:`.app`: the CLI, the
demo PPO trainer and environments; :mod:`.benchmarking`) -> :mod:`.integrations` ->
:mod:`.regularization` (schedules, controllers, config, regularizer, monitor) ->
:mod:`.ops` (the op wrappers, the reference) -> ``_ops`` (the compiled library).
This module re-exports the public names.
"""

import sys

# First: the compiled library is checked against the running torch before
# anything else touches torch.
from . import _ops  # noqa: F401
from .ops import hybrid_entropy_loss, hybrid_entropy_loss_from_distributions, reference
from .regularization import (
    ConstantEntropySchedule,
    CosineEntropySchedule,
    EntropyMonitor,
    EntropyRegularizationConfig,
    ExponentialEntropySchedule,
    HybridEntropyRegularizer,
    LinearEntropySchedule,
    PiecewiseEntropySchedule,
    TargetEntropyController,
)
from .regularization import config as _config_module
from .regularization import controller as _controller_module
from .regularization import regularizer as _regularizer_module
from .regularization import schedule as _schedule_module

__version__ = "0.1.0"

__all__ = [
    "hybrid_entropy_loss",
    "hybrid_entropy_loss_from_distributions",
    "reference",
    "LinearEntropySchedule",
    "ConstantEntropySchedule",
    "CosineEntropySchedule",
    "ExponentialEntropySchedule",
    "PiecewiseEntropySchedule",
    "EntropyRegularizationConfig",
    "HybridEntropyRegularizer",
    "TargetEntropyController",
    "EntropyMonitor",
]

# Module paths that stay importable beside the layered ones, as the same module objects:
# `hybrid_entropy_ext.reference`, which the README names, and the modules whose classes a
# whole-module pickle of a regularizer (torch.save(model)) names by the flat paths
# `hybrid_entropy_ext.regularizer`, `.schedule`, `.controller`, `.config`. The demo's
# `ppo`, `envs` and `cli` are alias files instead (ppo.py, envs.py, cli.py), loaded only
# when imported: they need the demo extra.
for _name, _module in (
    ("reference", reference),
    ("regularizer", _regularizer_module),
    ("schedule", _schedule_module),
    ("controller", _controller_module),
    ("config", _config_module),
):
    sys.modules.setdefault(f"{__name__}.{_name}", _module)
del sys, _name, _module, _config_module, _controller_module, _regularizer_module, _schedule_module
