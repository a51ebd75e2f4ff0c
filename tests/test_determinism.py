"""Bitwise reproducibility of the fused op: run after run, and whatever the thread count.

The CPU kernels reduce rows in fixed blocks of 64, each summed in a fixed order, and add the
block sums in order (README "Layout"), so neither repeating a call nor changing
``torch.set_num_threads`` may change a single bit of any output or gradient. The sizes span
many row blocks and several parallel tasks: B = 10000 rows is 157 blocks; with K = 7 the
kernels keep rows in SIMD lanes, with K = 100 columns; log_std is per sample ([B, D]), so
its reduction is parallel too.

Repeated calls are compared on every backend (``backend``: each CPU kernel build, and CUDA,
skipped without a GPU; CUDA's partial sums are added in a fixed order too). The thread-count
tests are CPU-only, since ``torch.set_num_threads`` only concerns the CPU kernels; they run
once per CPU kernel build (``cpu_isa``).
"""

import pytest
import torch

from conftest import fused_loss_on
from oracle import KEYS, OUTPUT_WEIGHTS

BATCH, ACTION_DIMS = 10_000, 6
THREAD_COUNTS = (1, 2, 3, 8)


@pytest.fixture
def restore_num_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def make_inputs(num_actions, dtype):
    gen = torch.Generator().manual_seed(1234 + num_actions)
    logits = (3.0 * torch.randn(BATCH, num_actions, generator=gen, dtype=torch.float64)).to(dtype)
    logits[::7, 0] = float("-inf")  # some masked actions, never a whole row
    log_std = (0.5 * torch.randn(BATCH, ACTION_DIMS, generator=gen, dtype=torch.float64) - 0.3).to(dtype)
    return logits, log_std


def run_once(logits, log_std, device="cpu"):
    """All outputs and the gradients of a weighted sum of all of them, as plain CPU tensors,
    with the op run on ``device``."""
    z = logits.detach().clone().requires_grad_(True)
    s = log_std.detach().clone().requires_grad_(True)
    c = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    # Thresholds above both entropies: both penalties active, every term in the backward.
    out = fused_loss_on(device, z, s, c, 1.3, 0.7, 100.0, 100.0, 2.0)
    loss = sum(w * out[k] for k, w in OUTPUT_WEIGHTS.items())
    grads = torch.autograd.grad(loss, (z, s, c))
    return [out[k].detach() for k in KEYS] + list(grads)


def assert_bitwise_equal(results, reference, what):
    names = list(KEYS) + ["d/d logits", "d/d log_std", "d/d entropy_coeff"]
    for name, got, want in zip(names, results, reference):
        assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {name}"
        # equal_nan is not needed: the inputs are finite apart from -inf masks.
        assert torch.equal(got, want), f"{what}: {name} differs"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("num_actions", [7, 100])
def test_repeated_calls_are_bitwise_identical(num_actions, dtype, backend):
    logits, log_std = make_inputs(num_actions, dtype)
    first = run_once(logits, log_std, backend)
    for attempt in range(3):
        assert_bitwise_equal(run_once(logits, log_std, backend), first, f"run {attempt + 2}")


# CPU-only: the thread count is the CPU kernels' parallelism.
@pytest.mark.usefixtures("cpu_isa")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("num_actions", [7, 100])
def test_thread_count_does_not_change_a_bit(num_actions, dtype, restore_num_threads):
    logits, log_std = make_inputs(num_actions, dtype)
    torch.set_num_threads(1)
    serial = run_once(logits, log_std)
    for threads in THREAD_COUNTS[1:]:
        torch.set_num_threads(threads)
        assert torch.get_num_threads() == threads
        assert_bitwise_equal(run_once(logits, log_std), serial, f"{threads} threads")


@pytest.mark.usefixtures("cpu_isa")  # CPU-only, as above
@pytest.mark.parametrize("num_actions", [7, 100])
def test_thread_count_does_not_change_a_bit_with_shared_log_std(num_actions, restore_num_threads):
    logits, log_std = make_inputs(num_actions, torch.float32)
    shared = log_std[0].clone()  # [D]
    torch.set_num_threads(1)
    serial = run_once(logits, shared)
    for threads in THREAD_COUNTS[1:]:
        torch.set_num_threads(threads)
        assert_bitwise_equal(run_once(logits, shared), serial, f"{threads} threads")

