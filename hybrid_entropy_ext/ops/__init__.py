"""The ops: the fused hybrid entropy loss and what adapts to it.

- :func:`hybrid_entropy_loss` (``loss.py``): the wrapper of the compiled op
  ``torch.ops.hybrid_entropy_ext.hybrid_entropy_loss``, TorchScript-able.
- :func:`hybrid_entropy_loss_from_distributions` (``distributions.py``): the op on a
  policy's ``torch.distributions`` objects; :func:`policy_heads`, the op's inputs read
  from them.
- :func:`log_prob_and_entropy` (``token_terms.py``): the per-token terms of a categorical
  policy (log-probability of the taken action and entropy) from the compiled op
  ``torch.ops.hybrid_entropy_ext.log_prob_and_entropy``, TorchScript-able.
- :func:`loss_terms_from_entropies` (``loss_terms.py``): the loss's combination from two
  batch-mean entropies, where the means come from elsewhere than one op call.
- ``aggregation.py``: how a sample mask and a loss-aggregation mode (:data:`LOSS_AGG_MODES`)
  become the op's row weights and mean denominator.
- :mod:`reference`: the pure-PyTorch reference, for tests and benchmarks only.

The lowest layer above the compiled library (``hybrid_entropy_ext._ops``): nothing here
imports the regularization layer or the application.
"""

from . import reference
from .aggregation import LOSS_AGG_MODES
from .distributions import PolicyHeads, hybrid_entropy_loss_from_distributions, policy_heads
from .loss import hybrid_entropy_loss
from .loss_terms import loss_terms_from_entropies
from .token_terms import log_prob_and_entropy

__all__ = [
    "LOSS_AGG_MODES",
    "PolicyHeads",
    "hybrid_entropy_loss",
    "hybrid_entropy_loss_from_distributions",
    "log_prob_and_entropy",
    "loss_terms_from_entropies",
    "policy_heads",
    "reference",
]
