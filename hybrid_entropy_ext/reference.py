"""``hybrid_entropy_ext.reference``: the pure-PyTorch reference of the hybrid entropy loss.

The names of :mod:`hybrid_entropy_ext.ops.reference` (where it is written), under the
path the README uses::

    >>> import torch
    >>> import hybrid_entropy_ext as hee
    >>> out = hee.reference.hybrid_entropy_loss(torch.randn(8, 3), torch.zeros(8, 2), 0.01)
"""

from .ops import reference as _reference
from .ops.reference import (
    GAUSSIAN_ENTROPY_CONSTANT,
    action_probabilities,
    continuous_entropy,
    continuous_row_entropy,
    discrete_row_entropy,
    expected_action_entropy,
    hybrid_entropy_loss,
    log_prob_and_entropy,
    loss_from_entropies,
    weighted_mean,
)

__all__ = list(_reference.__all__)
