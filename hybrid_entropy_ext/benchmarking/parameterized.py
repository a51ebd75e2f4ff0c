"""The hybrid loss of a parameterized policy (``parameterized_actions``) against the plain op
and against the reference doing the same.

Per case, the same logits ``[B, K]`` and the same log-stds: the fused op of the policy that
flattens every action's ``P`` parameters into one Gaussian of ``K * P`` dims (``plain``:
log_std ``[K * P]`` shared, or ``[B, K * P]`` per sample; what a user without parameterized
actions computes, reading the same bytes), the fused op with each of the ``K`` actions its own
``P`` parameters (``parameterized``: the same values as ``[K, P]``, or ``[B, K, P]``), and the
pure-PyTorch reference of the latter (``reference``: the softmax times each action's Gaussian
entropy). Each forward+backward of ``total`` (both penalties
active), in interleaved rounds (:func:`runner.time_interleaved`), medians. The goals, printed
with the table and never asserted: parameterized / plain at most 1.25, and the fused op faster
than the reference.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import torch

from ..ops import reference
from ..ops.loss import hybrid_entropy_loss
from .runner import Timing, device_timer, time_cases, variant_ratio_table

__all__ = ["ParameterizedCase", "PARAMETERIZED_CASES", "QUICK_PARAMETERIZED_CASES", "PARAMETERIZED_COST_GOAL",
           "run_parameterized", "format_parameterized_table"]

MODE = "forward_backward"
PARAMETERIZED_COST_GOAL = 1.25
ENTROPY_COEFF = 0.01


@dataclass(frozen=True)
class ParameterizedCase:
    batch: int
    num_actions: int
    num_params: int
    shared_log_std: bool = True

    @property
    def label(self) -> str:
        log_std = "[K, P]" if self.shared_log_std else "[B, K, P]"
        return f"{self.batch}x{self.num_actions}, P={self.num_params}, log_std {log_std}"


PARAMETERIZED_CASES = (
    ParameterizedCase(65536, 16, 3),
    ParameterizedCase(65536, 16, 3, shared_log_std=False),
    ParameterizedCase(4096, 64, 3),
)
QUICK_PARAMETERIZED_CASES = (ParameterizedCase(1024, 16, 3), ParameterizedCase(1024, 16, 3, shared_log_std=False))


def _steps(case: ParameterizedCase, device: str = "cpu") -> Dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(case.batch + case.num_actions)
    logits = torch.randn(case.batch, case.num_actions, generator=generator).to(device).requires_grad_()
    rows = () if case.shared_log_std else (case.batch,)
    values = (0.3 * torch.randn(*rows, case.num_actions, case.num_params, generator=generator)).to(device)
    plain_log_std = values.reshape(*rows, case.num_actions * case.num_params).clone().requires_grad_()
    action_log_std = values.clone().requires_grad_()

    def step(loss: Callable[..., Dict[str, torch.Tensor]], log_std: torch.Tensor, **kwargs) -> Callable[[], object]:
        def run() -> object:
            total = loss(logits, log_std, ENTROPY_COEFF, min_entropy_threshold=1.0,
                         continuous_min_entropy_threshold=10.0, **kwargs)["total"]
            return torch.autograd.grad(total, (logits, log_std))

        return run

    return {
        "plain": step(hybrid_entropy_loss, plain_log_std),
        "parameterized": step(hybrid_entropy_loss, action_log_std, parameterized_actions=True),
        "reference": step(reference.hybrid_entropy_loss, action_log_std, parameterized_actions=True),
    }


def run_parameterized(
    cases: Sequence[ParameterizedCase] = PARAMETERIZED_CASES,
    rounds: int = 9,
    min_seconds_per_sample: float = 0.02,
    timer=None,
    device: str = "cpu",
) -> List[Timing]:
    """Times the three calls of each case in interleaved rounds, on ``device``
    (:func:`runner.device_timer`, unless ``timer`` says otherwise)."""
    return time_cases(cases, lambda case: _steps(case, device), MODE, rounds, min_seconds_per_sample,
                      timer=timer or device_timer(device))


def format_parameterized_table(timings: Sequence[Timing]) -> str:
    """Markdown: per case the three medians (microseconds), parameterized / plain and
    reference / parameterized."""
    return variant_ratio_table(
        timings, "B x K, P, log_std", "plain", "parameterized", "reference", PARAMETERIZED_COST_GOAL)
