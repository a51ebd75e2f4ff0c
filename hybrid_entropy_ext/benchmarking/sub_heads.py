"""The fused ops on a multi-discrete head (``discrete_sizes``) against one categorical of the
same logits and against the reference doing the same.

Per case, the same logits ``[B, K]``: the fused op without sub-heads (``plain``: one
categorical of K), with ``discrete_sizes`` (``sub_heads``: H sub-heads of K / H actions), and
the pure-PyTorch reference with the same sub-heads (``reference``: a ``torch.split`` of the
logits, one log-softmax per sub-head). Two ops:

- ``hybrid_entropy_loss`` (with a ``[B, 4]`` log_std; each sub-head with its collapse
  penalty): forward+backward of ``total``;
- ``log_prob_and_entropy`` (``[B]`` actions for one categorical, ``[B, H]`` with sub-heads):
  forward+backward of ``(log_prob * advantages).sum() + 0.01 * entropy.sum()``.

In interleaved rounds (:func:`runner.time_interleaved`), medians. The goals, printed with the
table and never asserted: sub_heads / plain at most 1.25, and the fused sub-heads faster than
the reference.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import torch

from ..ops import reference
from ..ops.loss import hybrid_entropy_loss
from ..ops.token_terms import log_prob_and_entropy
from .runner import Timing, device_timer, time_cases, variant_ratio_table

__all__ = ["SubHeadsCase", "SUB_HEADS_CASES", "QUICK_SUB_HEADS_CASES", "SUB_HEADS_COST_GOAL",
           "run_sub_heads", "format_sub_heads_table"]

MODE = "forward_backward"
SUB_HEADS_COST_GOAL = 1.25
ENTROPY_COEFF = 0.01
LOG_STD_DIMS = 4
HYBRID_LOSS = "hybrid_entropy_loss"
TOKEN_TERMS = "log_prob_and_entropy"


@dataclass(frozen=True)
class SubHeadsCase:
    batch: int
    num_heads: int
    head_size: int
    op: str = HYBRID_LOSS

    @property
    def sizes(self) -> List[int]:
        return [self.head_size] * self.num_heads

    @property
    def label(self) -> str:
        return f"{self.op} {self.batch}x{self.num_heads * self.head_size} ({self.num_heads} x {self.head_size})"


SUB_HEADS_CASES = tuple(
    SubHeadsCase(b, h, k, op=op) for op in (HYBRID_LOSS, TOKEN_TERMS) for b, h, k in ((65536, 4, 4), (4096, 4, 16))
)
QUICK_SUB_HEADS_CASES = (SubHeadsCase(1024, 4, 4), SubHeadsCase(1024, 4, 4, op=TOKEN_TERMS))


def _steps(case: SubHeadsCase, device: str = "cpu") -> Dict[str, Callable[[], object]]:
    return (_hybrid_loss_steps if case.op == HYBRID_LOSS else _token_terms_steps)(case, torch.device(device))


def _token_terms_steps(case: SubHeadsCase, device: torch.device) -> Dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(case.batch + case.num_heads)
    logits = torch.randn(case.batch, case.num_heads * case.head_size, generator=generator).to(device).requires_grad_()
    head_actions = torch.randint(0, case.head_size, (case.batch, case.num_heads), generator=generator).to(device)
    flat_actions = torch.randint(0, case.num_heads * case.head_size, (case.batch,), generator=generator).to(device)
    advantages = torch.randn(case.batch, generator=generator).to(device)

    def step(terms: Callable[..., object], actions: torch.Tensor, **kwargs) -> Callable[[], object]:
        def run() -> object:
            log_prob, entropy = terms(logits, actions, None, 1.0, None, **kwargs)
            loss = (log_prob * advantages).sum() + ENTROPY_COEFF * entropy.sum()
            return torch.autograd.grad(loss, (logits,))

        return run

    return {
        "plain": step(log_prob_and_entropy, flat_actions),
        "sub_heads": step(log_prob_and_entropy, head_actions, discrete_sizes=case.sizes),
        "reference": step(reference.log_prob_and_entropy, head_actions, discrete_sizes=case.sizes),
    }


def _hybrid_loss_steps(case: SubHeadsCase, device: torch.device) -> Dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(case.batch + case.num_heads)
    logits = torch.randn(case.batch, case.num_heads * case.head_size, generator=generator).to(device).requires_grad_()
    log_std = (0.3 * torch.randn(case.batch, LOG_STD_DIMS, generator=generator)).to(device).requires_grad_()

    def step(loss: Callable[..., Dict[str, torch.Tensor]], **kwargs) -> Callable[[], object]:
        def run() -> object:
            total = loss(logits, log_std, ENTROPY_COEFF, min_entropy_threshold=1.0, **kwargs)["total"]
            return torch.autograd.grad(total, (logits, log_std))

        return run

    return {
        "plain": step(hybrid_entropy_loss),
        "sub_heads": step(hybrid_entropy_loss, discrete_sizes=case.sizes),
        "reference": step(reference.hybrid_entropy_loss, discrete_sizes=case.sizes),
    }


def run_sub_heads(
    cases: Sequence[SubHeadsCase] = SUB_HEADS_CASES,
    rounds: int = 9,
    min_seconds_per_sample: float = 0.02,
    timer=None,
    device: str = "cpu",
) -> List[Timing]:
    """Times the three calls of each case in interleaved rounds, on ``device``
    (:func:`runner.device_timer`, unless ``timer`` says otherwise)."""
    return time_cases(cases, lambda case: _steps(case, device), MODE, rounds, min_seconds_per_sample,
                      timer=timer or device_timer(device))


def format_sub_heads_table(timings: Sequence[Timing]) -> str:
    """Markdown: per case the three medians (microseconds), sub_heads / plain and reference / sub_heads."""
    return variant_ratio_table(timings, "op, B x K (H x K_h)", "plain", "sub_heads", "reference", SUB_HEADS_COST_GOAL)
