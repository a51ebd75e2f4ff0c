"""hybrid_entropy_ext: adaptive, fused entropy regularization for hybrid-action policies.

    import hybrid_entropy_ext as hee

    out = hee.hybrid_entropy_loss(logits, log_std, entropy_coeff)   # fused op
    ref = hee.reference.hybrid_entropy_loss(logits, log_std, entropy_coeff)
    reg = hee.HybridEntropyRegularizer(hee.EntropyRegularizationConfig.preset("long"))
    out = hee.hybrid_entropy_loss_from_distributions((Categorical(...), Normal(...)), 0.01)
"""

# First: the compiled library is checked against the running torch before
# anything else touches torch.
from . import _ops  # noqa: F401
from . import reference
from .config import EntropyRegularizationConfig
from .controller import TargetEntropyController
from .distributions import hybrid_entropy_loss_from_distributions
from .functional import hybrid_entropy_loss
from .monitor import EntropyMonitor
from .regularizer import HybridEntropyRegularizer
from .schedule import (
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    LinearEntropySchedule,
    PiecewiseEntropySchedule,
)

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
