"""Bitwise reproducibility of the fused op: run after run, and whatever the thread count.

The CPU kernels reduce rows in fixed blocks of 64, each summed in a fixed order, and add the
block sums in order (README "Layout"), so neither repeating a call nor changing
``torch.set_num_threads`` may change a single bit of any output or gradient. The sizes span
many row blocks and several parallel tasks: B = 10000 rows is 157 blocks; with K = 7 the
kernels keep rows in SIMD lanes, with K = 100 columns; a per-sample ([B, D]) log_std is
reduced in parallel too.

Repeated calls are compared for every variant of the op (op_variants.py) on every backend
(``backend``: each CPU kernel build, and CUDA, skipped without a GPU; CUDA's partial sums are
added in a fixed order too). The thread-count tests are CPU-only, since
``torch.set_num_threads`` only concerns the CPU kernels; they run every argument form of the
fused op once per CPU kernel build (``cpu_isa``).
"""

import pytest
import torch

from common_utils import run_on
from oracle import KEYS, OUTPUT_WEIGHTS
from op_variants import FUSED_OP_VARIANTS, OP_VARIANTS

BATCH, ACTION_DIMS = 10_000, 6
THREAD_COUNTS = (1, 2, 3, 8)
# Thresholds above both entropies: both penalties active, every term in the backward.
HYPER_PARAMETERS = (1.3, 0.7, 100.0, 100.0, 2.0)


@pytest.fixture
def restore_num_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def make_inputs(variant, num_actions, dtype):
    """The variant's arguments at B = 10000, with some masked actions (never a whole row)."""
    sample = variant.sample_inputs(BATCH, num_actions, ACTION_DIMS, dtype, seed=1234 + num_actions,
                                   logits_scale=3.0, log_std_scale=0.5, log_std_shift=-0.3,
                                   coeff_dtype=torch.float64)
    if sample.logits is not None:
        sample.logits[::7, 0] = float("-inf")
    return sample


def run_once(variant, sample, device="cpu"):
    """All outputs and the gradients of a weighted sum of all of them w.r.t. every tensor
    argument, by name, as plain CPU tensors, with the op run on ``device``."""
    args = [t.detach().clone().requires_grad_(True) if isinstance(t, torch.Tensor) else t for t in sample]
    out = run_on(device, variant.op, *args, *HYPER_PARAMETERS)
    loss = sum(w * out[k] for k, w in OUTPUT_WEIGHTS.items())
    leaves = {f"d/d {name}": t for name, t in zip(sample._fields, args) if isinstance(t, torch.Tensor)}
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {**{k: out[k].detach() for k in KEYS}, **dict(zip(leaves, grads))}


def assert_bitwise_equal(results, reference, what):
    assert results.keys() == reference.keys()
    for name, want in reference.items():
        got = results[name]
        assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {name}"
        # equal_nan is not needed: the inputs are finite apart from -inf masks.
        assert torch.equal(got, want), f"{what}: {name} differs"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("num_actions", [7, 100])
@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_repeated_calls_are_bitwise_identical(variant, num_actions, dtype, backend):
    sample = make_inputs(variant, num_actions, dtype)
    first = run_once(variant, sample, backend)
    for attempt in range(3):
        assert_bitwise_equal(run_once(variant, sample, backend), first, f"run {attempt + 2}")


# CPU-only: the thread count is the CPU kernels' parallelism. Every argument form of the
# fused op: [B, D] and shared [D] log_std, one head or two, one coefficient or one per head.
@pytest.mark.usefixtures("cpu_isa")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("num_actions", [7, 100])
@pytest.mark.parametrize("variant", FUSED_OP_VARIANTS, ids=str)
def test_thread_count_does_not_change_a_bit(variant, num_actions, dtype, restore_num_threads):
    sample = make_inputs(variant, num_actions, dtype)
    torch.set_num_threads(1)
    serial = run_once(variant, sample)
    for threads in THREAD_COUNTS[1:]:
        torch.set_num_threads(threads)
        assert torch.get_num_threads() == threads
        assert_bitwise_equal(run_once(variant, sample), serial, f"{threads} threads")
