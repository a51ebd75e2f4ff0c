"""pytest-benchmark records of the fused op and its alternatives (``pytest benchmarks/ --benchmark-only``).

Run on demand, not in CI: timings are a record, never an assertion. Ratios measured side by
side come from ``run_benchmarks.py``.
"""

import pytest
import torch

from hybrid_entropy_ext.benchmarking import runner as hee_benchmark

SIZES = list(hee_benchmark.QUICK_CASES)
IMPLEMENTATIONS = ["fused", "distributions", "reference", "reference_compiled"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", SIZES, ids=lambda c: c.label)
def test_forward_backward(benchmark, case, implementation):
    inputs = case.make_inputs()
    loss = hee_benchmark.IMPLEMENTATIONS[implementation]
    logits, log_std = inputs["logits"], inputs["log_std"]

    def step():
        return torch.autograd.grad(loss(logits, log_std, 0.01)["total"], (logits, log_std))

    step()  # compile / warm up outside the record
    benchmark(step)
