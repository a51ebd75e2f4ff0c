"""hybrid_entropy_ext: adaptive, fused entropy regularization for hybrid-action policies.

    import hybrid_entropy_ext as hee

    out = hee.hybrid_entropy_loss(logits, log_std, entropy_coeff)   # fused op
    ref = hee.reference.hybrid_entropy_loss(logits, log_std, entropy_coeff)
    log_prob, entropy = hee.log_prob_and_entropy(logits, actions, mask)   # per token
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
from . import reference
from .ops import hybrid_entropy_loss, hybrid_entropy_loss_from_distributions, log_prob_and_entropy
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
from .ops import distributions as _distributions_module
from .ops import loss as _loss_module
from .regularization import config as _config_module
from .regularization import controller as _controller_module
from .regularization import monitor as _monitor_module
from .regularization import regularizer as _regularizer_module
from .regularization import schedule as _schedule_module

__version__ = "0.1.0"

__all__ = [
    "hybrid_entropy_loss",
    "hybrid_entropy_loss_from_distributions",
    "log_prob_and_entropy",
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

# The flat module paths of the package's modules, kept as the same module objects (both
# `import hybrid_entropy_ext.schedule` and the attribute `hee.schedule`): code written
# against them, and whole-module pickles of a regularizer (torch.save(model)), which name
# its classes by those paths. `reference` is a module of its own (reference.py) that
# re-exports the reference's names; the demo's `ppo`, `envs`, `cli` and the benchmarks'
# `benchmark`, `benchmark_cuda` are alias files, loaded only when imported.
for _name, _module in (
    ("functional", _loss_module),
    ("distributions", _distributions_module),
    ("regularizer", _regularizer_module),
    ("schedule", _schedule_module),
    ("controller", _controller_module),
    ("config", _config_module),
    ("monitor", _monitor_module),
):
    sys.modules.setdefault(f"{__name__}.{_name}", _module)
    globals()[_name] = _module
del sys, _name, _module, _config_module, _controller_module, _distributions_module, _loss_module
del _monitor_module, _regularizer_module, _schedule_module
