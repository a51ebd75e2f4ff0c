"""Big inputs: rows longer than any tile, K not a multiple of the SIMD width, and more than
2^31 elements (64-bit indexing).

Rows of K = 100_000 and K = 1_000_003 columns never fit a kernel tile or a cache line
pattern; K = 1_000_003 leaves a scalar tail after the vector loop for every SIMD width.
They are checked against float64 ``torch.distributions.Categorical`` on the same values,
with the error model of ``test_properties.py``: a float32 accumulation of K terms is off by
about ``4 u (4 + sqrt(K)) (1 + |H| + log K)`` (u = 2^-24 float32, 2^-53 float64) and each
gradient entry by that, relative to ``1 + |H| + log K``, times ``2 + 2 log K`` (the size of
log p) times the upstream scale 1/B, plus the rounding to the gradient's dtype.

``test_more_than_2_to_the_31_elements`` (B = 2^16 + 3, K = 2^15 + 1, bfloat16: 2.15e9
elements, 4.3 GB, and as much again for the gradient) is slow and opt-in:
``HEE_RUN_SLOW=1 python -m pytest tests/test_big_inputs.py -s``. It skips itself when less
than 16 GB of memory is available. Rows 65534.. start at or straddle element 2^31, so a
32-bit offset anywhere in the forward or backward would read or write the wrong row.
"""

import math
import resource
import time

import pytest
import torch
from torch.distributions import Categorical

import hybrid_entropy_ext as hee
from common_utils import UNIT_ROUNDOFF, entropy_tolerance, slow


def long_rows(k, dtype):
    """Three rows: random, random with every third action masked, uniform (H = log K)."""
    gen = torch.Generator().manual_seed(k)
    logits = 3.0 * torch.randn(3, k, generator=gen, dtype=torch.float64)
    logits[1, ::3] = -math.inf
    logits[2] = 0.25
    return logits.to(dtype)


@pytest.mark.usefixtures("cpu_isa")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("k", [100_000, 1_000_003])
def test_long_rows_match_categorical_in_float64(k, dtype):
    logits = long_rows(k, dtype).requires_grad_(True)
    out = hee.hybrid_entropy_loss(logits, None, 0.1, min_entropy_threshold=None)
    (grad,) = torch.autograd.grad(out["discrete_entropy"], logits)

    z64 = logits.detach().double().requires_grad_(True)
    # Masked actions are -inf: replace them by a finite value whose probability is exactly
    # 0 in float64, so that Categorical's gradient of them is an exact 0 (see
    # test_properties.py for why its own -inf handling is not used).
    masked = z64.detach() == -math.inf
    finite = torch.where(masked, z64.detach()[~masked].min() - 1000.0, z64)
    h_rows = Categorical(logits=finite).entropy()
    (want_grad,) = torch.autograd.grad(h_rows.mean(), z64)

    h = h_rows.mean().item()
    tol = entropy_tolerance(dtype, k, h)
    assert abs(out["discrete_entropy"].item() - h) <= tol
    size_log_p = 2 + 2 * math.log(k)
    atol = tol / (1 + abs(h) + math.log(k)) * size_log_p / 3  # upstream scale 1/B, B = 3
    u = UNIT_ROUNDOFF[dtype]
    torch.testing.assert_close(grad.double(), want_grad, rtol=2 * u, atol=atol + 1e-300)
    assert (grad[masked] == 0).all()


@pytest.mark.usefixtures("cpu_isa")
@pytest.mark.parametrize("k", [100_000, 1_000_003])
def test_uniform_long_row_has_entropy_log_k_to_float32_precision(k):
    # All-equal logits: every exp is exactly 1 and the sum K is exact in float32
    # (K < 2^24), so only the final log rounds.
    logits = torch.full((2, k), -7.5)
    out = hee.hybrid_entropy_loss(logits, None, 0.1, min_entropy_threshold=None)
    assert out["discrete_entropy"].item() == pytest.approx(math.log(k), rel=4 * 2.0 ** -24)


@pytest.mark.usefixtures("cpu_isa")
@pytest.mark.parametrize("k", [17, 31, 33, 1_000_003])
def test_tail_columns_past_the_last_full_vector_count(k):
    # Put the row's only large logit in the last column (the scalar tail for every SIMD
    # width when K is not a multiple of it): a kernel that skipped or misread the tail
    # would see a near-uniform row instead of a near-one-hot one.
    logits = torch.zeros(2, k, dtype=torch.float64)
    logits[:, -1] = 40.0
    logits.requires_grad_(True)
    out = hee.hybrid_entropy_loss(logits, None, 0.1, min_entropy_threshold=None)
    want = Categorical(logits=logits.detach()).entropy().mean().item()
    assert out["discrete_entropy"].item() == pytest.approx(want, rel=1e-9)
    (grad,) = torch.autograd.grad(out["discrete_entropy"], logits)
    z = logits.detach().clone().requires_grad_(True)
    (want_grad,) = torch.autograd.grad(Categorical(logits=z).entropy().mean(), z)
    # float64 both sides; entries scale with 1/B, and the dominant entry is a cancellation
    # (log p ~ -h ~ 1e-15) that neither side resolves better than a few u64 (1 + log K).
    atol = 16 * UNIT_ROUNDOFF[torch.float64] * (2 + 2 * math.log(k)) / 2
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=atol)


# --------------------------------------------------------------------------------------
# More than 2^31 elements (slow, opt-in)
# --------------------------------------------------------------------------------------

BIG_B, BIG_K = 2 ** 16 + 3, 2 ** 15 + 1
CHECK_ROWS = [0, 1, 12345, 65533, 65534, 65535, 65536, 65537, 65538]  # 65534 straddles 2^31


def available_memory_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fill_big_logits():
    """bfloat16 [B, K] with a per-row scale (distinct entropies), built in chunks."""
    logits = torch.empty(BIG_B, BIG_K, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(2 ** 31)
    scales = 0.25 + (torch.arange(BIG_B, dtype=torch.float32) % 13) * 0.5
    for begin in range(0, BIG_B, 4096):
        rows = logits[begin:begin + 4096]
        rows.normal_(generator=gen)
        rows.mul_(scales[begin:begin + 4096, None].to(torch.bfloat16))
    # The rows at and past 2^31 differ from every row before it: masked, then uniform.
    logits[65535, ::2] = -math.inf
    logits[65536:] = 0.0
    return logits


def row_entropies_float64(logits, begin, end):
    z = logits[begin:end].double()
    log_p = torch.log_softmax(z, dim=-1)
    return -(log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum(dim=-1)


@slow
def test_more_than_2_to_the_31_elements():
    assert BIG_B * BIG_K > 2 ** 31
    if available_memory_bytes() < 16 * 2 ** 30:
        pytest.skip(f"needs 16 GB of available memory, has {available_memory_bytes() / 2 ** 30:.1f} GB")
    logits = fill_big_logits().requires_grad_(True)

    start = time.perf_counter()
    raw = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss(
        logits.detach(), None, torch.tensor(0.1, dtype=torch.float64), 1.0, 0.5, None, None, 3.0)
    out = hee.hybrid_entropy_loss(logits, None, 0.1, min_entropy_threshold=None)
    forward_seconds = time.perf_counter() - start
    start = time.perf_counter()
    (grad,) = torch.autograd.grad(out["discrete_entropy"], logits)
    backward_seconds = time.perf_counter() - start
    row_entropy = raw[7][2]  # row_stats: row max, log of the shifted sum, entropy

    # The batch mean against a float64 reference computed in chunks of rows.
    start = time.perf_counter()
    total = 0.0
    for begin in range(0, BIG_B, 1024):
        total += row_entropies_float64(logits.detach(), begin, min(BIG_B, begin + 1024)).sum().item()
    want_mean = total / BIG_B
    reference_seconds = time.perf_counter() - start
    got_mean = out["discrete_entropy"].item()
    mean_tol = entropy_tolerance(torch.bfloat16, BIG_K, want_mean)

    print(f"\n[B={BIG_B}, K={BIG_K}, {BIG_B * BIG_K:,} bfloat16 elements] forward "
          f"{forward_seconds:.2f} s (two calls), backward {backward_seconds:.2f} s, float64 "
          f"chunked reference {reference_seconds:.1f} s, peak RSS {peak_rss_bytes() / 2 ** 30:.2f} GB, "
          f"H_d {got_mean!r} vs float64 {want_mean!r} (|diff| {abs(got_mean - want_mean):.3g}, "
          f"tol {mean_tol:.3g})")
    assert abs(got_mean - want_mean) <= mean_tol

    # Per-row entropies and gradients of rows on both sides of element 2^31.
    u_bf16 = UNIT_ROUNDOFF[torch.bfloat16]
    for row in CHECK_ROWS:
        z = logits.detach()[row:row + 1].double().requires_grad_(True)
        log_p = torch.log_softmax(z, dim=-1)
        h = -(log_p.exp() * torch.where(torch.isinf(log_p), 0.0, log_p)).sum()
        (want_row_grad,) = torch.autograd.grad(h / BIG_B, z)
        tol = entropy_tolerance(torch.bfloat16, BIG_K, h.item())
        assert abs(row_entropy[row].item() - h.item()) <= tol, f"row {row}"
        size_log_p = 2 + 2 * math.log(BIG_K)
        atol = tol / (1 + abs(h.item()) + math.log(BIG_K)) * size_log_p / BIG_B
        torch.testing.assert_close(grad[row:row + 1].double(), want_row_grad,
                                   rtol=2 * u_bf16, atol=atol + u_bf16 * want_row_grad.abs().max().item(),
                                   msg=lambda m, row=row: f"gradient of row {row}: {m}")
    assert row_entropy[65536:].double().sub(math.log(BIG_K)).abs().max().item() <= 4e-7 * math.log(BIG_K)
    assert (grad[65535, ::2] == 0).all()
