"""``HybridEntropyRegularizer(check_finite=True)``: NaN and infinite inputs as a ``ValueError``.

The op never inspects values (that would be a host sync per call); it returns NaN outputs
for NaN inputs, as PyTorch's losses do. This check, off by default, reads one verdict per
input instead, in a single host sync. TorchScript code.
"""

from typing import List, Optional

import torch
from torch import Tensor

__all__ = ["check_inputs_finite"]


def check_inputs_finite(
    logits: Optional[Tensor], log_std: Optional[Tensor], action_mask: Optional[Tensor] = None
) -> None:
    """Raise a ``ValueError`` naming the input if ``logits`` holds NaN or ``+inf`` (``-inf``
    marks a masked action and is allowed) where ``action_mask`` (bool, the logits' shape, or
    ``None``) allows the action, or ``log_std`` holds NaN or ``+/-inf``. What a ruled-out
    action's logit holds is never read.

    One reduction per present input, stacked so that reading the verdicts is a single
    host sync. Nothing to check when both are ``None`` (the op reports that).
    """
    names: List[str] = []
    verdicts: List[Tensor] = []
    if logits is not None:
        names.append("logits")
        # `< +inf` (False for NaN and +inf) rather than isfinite: -inf logits are masked actions.
        below_inf = torch.lt(logits, float("inf"))
        if action_mask is not None:
            below_inf = below_inf | ~action_mask
        verdicts.append(below_inf.all())
    if log_std is not None:
        names.append("log_std")
        verdicts.append(torch.isfinite(log_std).all())
    if len(verdicts) == 0:
        return
    ok: List[bool] = torch.stack(verdicts).tolist()
    for i in range(len(names)):
        if not ok[i]:
            if names[i] == "logits":
                found, expected = "NaN or +inf", "finite values or -inf (masked actions)"
            else:
                found, expected = "NaN or +/-inf", "finite values"
            raise ValueError(
                "HybridEntropyRegularizer(check_finite=True): " + names[i] + " contains "
                + found + " values; expected " + expected
            )
