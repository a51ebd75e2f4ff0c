"""The hybrid loss with a sample mask against the plain call, side by side.

The same logits ``[B, K]`` and shared log_std ``[D]``: the plain fused call (a batch mean),
and the call with a bool ``sample_mask`` ``[B]`` keeping about 90% of the rows
(``loss_agg_mode="token-mean"``, the mask becoming the op's row weights), timed forward+
backward in interleaved rounds (:func:`runner.time_interleaved`), medians. The ratio
masked / plain is what a mask costs; the goal, printed with the table and never asserted,
is at most 1.10.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import torch

from ..ops.loss import hybrid_entropy_loss
from .runner import Timing, medians_by_case, time_cases, wall_clock_seconds

__all__ = ["MaskedCase", "MASKED_CASES", "QUICK_MASKED_CASES", "MASK_COST_GOAL", "run_masked_loss",
           "format_masked_table"]

MODE = "forward_backward"
MASK_COST_GOAL = 1.10


@dataclass(frozen=True)
class MaskedCase:
    batch: int
    num_actions: int
    action_dims: int = 8
    kept_fraction: float = 0.9

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.num_actions}"


MASKED_CASES = (MaskedCase(65536, 16),)
QUICK_MASKED_CASES = (MaskedCase(1024, 16),)


def _steps(case: MaskedCase) -> Dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(case.batch + case.num_actions)
    logits = torch.randn(case.batch, case.num_actions, generator=generator).requires_grad_()
    log_std = torch.zeros(case.action_dims, requires_grad=True)
    mask = torch.rand(case.batch, generator=generator) < case.kept_fraction

    def plain() -> object:
        out = hybrid_entropy_loss(logits, log_std, 0.01)
        out["total"].backward()
        return out

    def masked() -> object:
        out = hybrid_entropy_loss(logits, log_std, 0.01, 1.0, 0.5, 0.1, 0.1, 3.0, mask, "token-mean")
        out["total"].backward()
        return out

    return {"plain": plain, "masked": masked}


def run_masked_loss(
    cases: Sequence[MaskedCase] = MASKED_CASES,
    rounds: int = 9,
    min_seconds_per_sample: float = 0.02,
    timer=wall_clock_seconds,
) -> List[Timing]:
    """Times the plain and the masked call of each case in interleaved rounds."""
    return time_cases(cases, _steps, MODE, rounds, min_seconds_per_sample, timer=timer)


def format_masked_table(timings: Sequence[Timing]) -> str:
    """Markdown: per case the two medians (microseconds) and masked / plain."""
    rows = [
        f"Goal (reported, not asserted): masked / plain <= {MASK_COST_GOAL:.2f}.",
        "",
        "| B x K | plain (us) | masked (us) | masked / plain |",
        "|---|---:|---:|---:|",
    ]
    for label, by_name in medians_by_case(timings).items():
        plain, masked = by_name.get("plain"), by_name.get("masked")
        if plain is None or masked is None:
            continue
        rows.append(f"| {label} | {plain * 1e6:.1f} | {masked * 1e6:.1f} | {masked / plain:.3f} |")
    return "\n".join(rows)
