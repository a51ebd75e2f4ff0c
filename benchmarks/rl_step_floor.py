"""How far the RL rows of the token-terms suite can go: the same training step with terms
that compute nothing.

The suite's RL rows time ``(log_prob * advantages).sum() + 0.01 * entropy.sum()`` and its
``autograd.grad`` through three implementations of the per-token terms
(``hybrid_entropy_ext/benchmarking/token_terms.py``). This script times the same step with
a fourth, ``floor``: a ``torch.autograd.Function`` that returns two fresh ``[N]`` tensors of
zeros and an uninitialized ``[N, K]`` gradient, no arithmetic. ``categorical / floor`` is then
the largest ratio any implementation of the terms could reach against ``Categorical`` in
this harness, and ``fused - floor`` what the fused op's call and kernels add to it.

    python benchmarks/rl_step_floor.py [--rounds 9] [--threads 2]

Interleaved rounds, medians, in one process (``runner.time_interleaved``, as the suite
times).
"""

import argparse
from typing import Tuple

import torch
from torch import Tensor

from hybrid_entropy_ext.benchmarking import runner, token_terms

CASES = (token_terms.TokenCase((65536,), 16), token_terms.TokenCase((4096,), 64))


class NoTerms(torch.autograd.Function):
    """``[N, K]`` logits -> two ``[N]`` terms of zeros; backward: an uninitialized ``[N, K]``
    gradient. What every implementation must at least allocate and return. (Zeros, not
    uninitialized terms: the loss multiplies them, and garbage there can hold subnormals,
    whose arithmetic is slow.)"""

    @staticmethod
    def forward(ctx, logits: Tensor) -> Tuple[Tensor, Tensor]:
        ctx.logits_shape = logits.shape
        rows = logits.shape[:-1]
        return torch.zeros(rows), torch.zeros(rows)

    @staticmethod
    def backward(ctx, grad_log_prob: Tensor, grad_entropy: Tensor) -> Tensor:
        return torch.empty(ctx.logits_shape)


def no_terms(logits: Tensor, actions: Tensor, mask, temperature: float) -> Tuple[Tensor, Tensor]:
    return NoTerms.apply(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; {args.threads} threads; median of {args.rounds} interleaved rounds\n")
    print("| case | fused (us) | categorical (us) | floor (us) | categorical / fused | categorical / floor "
          "| fused - floor (us) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in CASES:
        inputs = case.make_inputs()
        steps = {
            "fused": token_terms.training_step(token_terms.fused_log_prob_and_entropy(), inputs, 1.0),
            "categorical": token_terms.training_step(token_terms.categorical_log_prob_and_entropy, inputs, 1.0),
            "floor": token_terms.training_step(no_terms, inputs, 1.0),
        }
        timings = runner.time_interleaved(case.label, "forward_backward", steps, args.rounds, min_seconds=0.02)
        median = {timing.implementation: timing.median_s * 1e6 for timing in timings}
        fused, categorical, floor = median["fused"], median["categorical"], median["floor"]
        print(f"| {case.label} | {fused:.1f} | {categorical:.1f} | {floor:.1f} | {categorical / fused:.2f}x "
              f"| {categorical / floor:.2f}x | {fused - floor:.1f} |")


if __name__ == "__main__":
    main()
