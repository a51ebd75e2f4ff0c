"""The fused ops with an action mask against the plain call and the reference.

Per case, the same logits ``[B, K]``: the fused op without a mask (``plain``), with a bool
``action_mask`` ``[B, K]`` allowing about 70% of the actions (``masked``), and the
pure-PyTorch reference with the same mask (``reference``, which builds the masked logits
with ``torch.where``). Two ops:

- ``log_prob_and_entropy`` (each row's taken action among the allowed ones):
  forward+backward of ``(log_prob * advantages).sum() + 0.01 * entropy.sum()``;
- ``hybrid_entropy_loss`` (with a ``[B, 4]`` log_std): forward+backward of ``total``.

Each is timed in interleaved rounds (:func:`runner.time_interleaved`), medians; on CUDA
between CUDA events (``device="cuda"``). The goals,
printed with the table and never asserted: masked / plain at most 1.25, and the masked op
faster than the reference.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import torch

from ..ops import reference
from ..ops.loss import hybrid_entropy_loss
from ..ops.token_terms import log_prob_and_entropy
from .runner import Timing, device_timer, time_cases, variant_ratio_table

__all__ = ["ActionMaskCase", "ACTION_MASK_CASES", "QUICK_ACTION_MASK_CASES", "MASK_COST_GOAL",
           "run_action_mask", "format_action_mask_table"]

MODE = "forward_backward"
MASK_COST_GOAL = 1.25
ENTROPY_COEFF = 0.01


TOKEN_TERMS = "log_prob_and_entropy"
HYBRID_LOSS = "hybrid_entropy_loss"
LOG_STD_DIMS = 4


@dataclass(frozen=True)
class ActionMaskCase:
    batch: int
    num_actions: int
    allowed_fraction: float = 0.7
    op: str = TOKEN_TERMS

    @property
    def label(self) -> str:
        return f"{self.op} {self.batch}x{self.num_actions}"


ACTION_MASK_CASES = tuple(
    ActionMaskCase(b, k, op=op) for op in (TOKEN_TERMS, HYBRID_LOSS) for b, k in ((65536, 16), (4096, 64))
)
QUICK_ACTION_MASK_CASES = (ActionMaskCase(1024, 16), ActionMaskCase(1024, 16, op=HYBRID_LOSS))


def _steps(case: ActionMaskCase, device: str = "cpu") -> Dict[str, Callable[[], object]]:
    steps_of = _token_terms_steps if case.op == TOKEN_TERMS else _hybrid_loss_steps
    return steps_of(case, torch.device(device))


def _leaf(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.to(device).requires_grad_()


def _hybrid_loss_steps(case: ActionMaskCase, device: torch.device) -> Dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(case.batch + case.num_actions)
    logits = _leaf(torch.randn(case.batch, case.num_actions, generator=generator), device)
    log_std = _leaf(0.3 * torch.randn(case.batch, LOG_STD_DIMS, generator=generator), device)
    allowed = (torch.rand(case.batch, case.num_actions, generator=generator) < case.allowed_fraction).to(device)

    def step(loss: Callable[..., Dict[str, torch.Tensor]], action_mask=None) -> Callable[[], object]:
        def run() -> object:
            total = loss(logits, log_std, ENTROPY_COEFF, action_mask=action_mask)["total"]
            return torch.autograd.grad(total, (logits, log_std))

        return run

    return {
        "plain": step(hybrid_entropy_loss),
        "masked": step(hybrid_entropy_loss, allowed),
        "reference": step(reference.hybrid_entropy_loss, allowed),
    }


def _token_terms_steps(case: ActionMaskCase, device: torch.device) -> Dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(case.batch + case.num_actions)
    logits = _leaf(torch.randn(case.batch, case.num_actions, generator=generator), device)
    actions = torch.randint(0, case.num_actions, (case.batch,), generator=generator)
    allowed = torch.rand(case.batch, case.num_actions, generator=generator) < case.allowed_fraction
    allowed[torch.arange(case.batch), actions] = True
    actions, allowed = actions.to(device), allowed.to(device)
    advantages = torch.randn(case.batch, generator=generator).to(device)

    def step(terms: Callable[..., object], action_mask=None) -> Callable[[], object]:
        def run() -> object:
            log_prob, entropy = terms(logits, actions, None, 1.0, action_mask)
            loss = (log_prob * advantages).sum() + ENTROPY_COEFF * entropy.sum()
            return torch.autograd.grad(loss, (logits,))

        return run

    return {
        "plain": step(log_prob_and_entropy),
        "masked": step(log_prob_and_entropy, allowed),
        "reference": step(reference.log_prob_and_entropy, allowed),
    }


def run_action_mask(
    cases: Sequence[ActionMaskCase] = ACTION_MASK_CASES,
    rounds: int = 9,
    min_seconds_per_sample: float = 0.02,
    timer=None,
    device: str = "cpu",
) -> List[Timing]:
    """Times the three calls of each case in interleaved rounds, on ``device``: by the wall
    clock on the CPU, between CUDA events on CUDA (unless ``timer`` says otherwise)."""
    return time_cases(cases, lambda case: _steps(case, device), MODE, rounds, min_seconds_per_sample,
                      timer=timer or device_timer(device))


def format_action_mask_table(timings: Sequence[Timing]) -> str:
    """Markdown: per case the three medians (microseconds), masked / plain and reference / masked."""
    return variant_ratio_table(timings, "op, B x K", "plain", "masked", "reference", MASK_COST_GOAL)
