"""The CUDA kernels, run on the host.

``tests/cuda_emulation/`` compiles the kernels of ``csrc/cuda/``, their launch plan and their
ATen glue, unchanged, against a host model of CUDA's execution (a thread per GPU thread, barriers
for ``__syncthreads`` and warp shuffles; ``cuda_emulation.h``). These tests hold what
they compute to the CPU op (itself held to ``torch.distributions``) on every layout the
plan chooses: rows in warps for K <= 1024, a row per block above, with and without
16-byte vectors, and rows split over several blocks. This is how a machine without a
GPU runs the kernels' logic; it says nothing about their speed, and the GPU tests
(``tests/test_cuda.py``) remain the word on real hardware.
"""

import math
import os

import numpy as np
import pytest
import torch
from torch.utils import cpp_extension

import hybrid_entropy_ext as hee
from common_utils import GRAD_TOLERANCES, VALUE_TOLERANCES, assert_rows_close, random_heads
from oracle import KEYS, OUTPUT_WEIGHTS, distributions_oracle, sub_heads_oracle, token_terms_oracle
from token_terms_checks import assert_grad_close

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(REPO, "csrc")
EMULATION = os.path.join(REPO, "tests", "cuda_emulation")
BACKWARD_OP = torch.ops.hybrid_entropy_ext._hybrid_entropy_loss_backward.default

PARAMS = dict(discrete_entropy_weight=1.0, continuous_entropy_weight=0.5, min_entropy_threshold=10.0,
              continuous_min_entropy_threshold=10.0, penalty_multiplier=3.0)
UPSTREAM = tuple(OUTPUT_WEIGHTS.values())
# A GPU large enough that modest batches of long rows get split over blocks.
MULTIPROCESSORS = 132


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """The ops of the test-only namespace hee_cuda_emulation (tests/cuda_emulation/emulated_ops.cpp)."""
    cpp_extension.load(
        name="hee_cuda_emulation",
        sources=[os.path.join(EMULATION, "emulated_ops.cpp"), os.path.join(CSRC, "op_schemas.cpp"),
                 os.path.join(CSRC, "loss_plan.cpp"), os.path.join(CSRC, "checks.cpp"),
                 os.path.join(CSRC, "token_terms_plan.cpp")],
        extra_include_paths=[CSRC, EMULATION],
        extra_cflags=["-O1", "-std=c++20", "-pthread", "-Wall", "-Werror", "-Wno-unknown-pragmas",
                      "-fvisibility=hidden",
                      # A load or store through a misaligned vector pointer aborts, as it faults on a GPU.
                      "-fsanitize=alignment", "-fno-sanitize-recover=alignment"],
        extra_ldflags=["-fsanitize=alignment", "-pthread"],
        build_directory=str(tmp_path_factory.mktemp("cuda_emulation")),
        is_python_module=False,
    )
    return torch.ops.hee_cuda_emulation


def configure(lib, multiprocessors=MULTIPROCESSORS, threads_per_multiprocessor=2048, coeff_on_host=False,
              output_offset=0):
    lib.configure(multiprocessors, threads_per_multiprocessor, coeff_on_host, output_offset)


def emulated_forward(lib, logits, log_std, coeff, coeff_on_host=False, params=PARAMS,
                     multiprocessors=MULTIPROCESSORS, row_weights=None, mean_denominator=None, action_mask=None):
    """The seven outputs, row_stats and the launch plan, from the emulated CUDA forward."""
    configure(lib, multiprocessors, coeff_on_host=coeff_on_host)
    out = lib.hybrid_entropy_loss(logits, log_std, coeff, *params.values(), row_weights, mean_denominator,
                                  action_mask)
    plan = lib.last_forward()
    layout = {"layout": ("warps", "block")[plan[0]], "log2_cols": plan[1], "threads": plan[2],
              "vec": plan[3], "splits": plan[4], "launches": plan[5]}
    return dict(zip(KEYS, out[:7])), out[7], layout


def emulated_backward(lib, logits, log_std, coeff, outputs, row_stats, upstream=UPSTREAM,
                      coeff_on_host=False, params=PARAMS, wanted=(True, True, True),
                      grad_logits_offset=0, row_weights=None, mean_denominator=None, action_mask=None):
    """(grad_logits, grad_log_std, grad_coeff, launches) from the emulated CUDA backward.

    grad_log_std is its one value, or with row weights the whole gradient.
    ``grad_logits_offset`` places the gradient that many elements past an aligned start.
    """
    out_dtype = outputs["total"].dtype
    has_d, has_c = logits is not None, log_std is not None
    grads = [torch.tensor(g, dtype=out_dtype) if g is not None else None for g in upstream]
    configure(lib, coeff_on_host=coeff_on_host, output_offset=grad_logits_offset)
    try:
        grad_logits, grad_log_std, grad_coeff = lib._hybrid_entropy_loss_backward(
            *grads, logits, log_std, coeff, row_stats, outputs["discrete_entropy"],
            outputs["continuous_entropy"], torch.empty(0, dtype=out_dtype), list(wanted), *params.values(), row_weights,
            mean_denominator, action_mask, None, None, False, False)
    finally:
        configure(lib)
    if has_c and wanted[1] and row_weights is None:
        grad_log_std = grad_log_std.reshape(-1)[0]
    return (grad_logits if has_d and wanted[0] else None,
            grad_log_std if has_c and wanted[1] else None,
            grad_coeff if wanted[2] else None, lib.last_launches())


def cpu_backward(logits, log_std, coeff, upstream=UPSTREAM, params=PARAMS, row_weights=None, mean_denominator=None,
                 action_mask=None):
    """The CPU op's gradients for the same upstream gradients (the CPU's own forward state)."""
    out = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default(
        logits, log_std, coeff, *params.values(), row_weights, mean_denominator, action_mask)
    grads = [torch.tensor(g, dtype=out[0].dtype) if g is not None else None for g in upstream]
    return BACKWARD_OP(*grads, logits, log_std, coeff, out[7], out[5], out[6], out[8],
                       [logits is not None, log_std is not None, True], *params.values(), row_weights,
                       mean_denominator, action_mask, None, None, False, False)


inputs = random_heads


def grad_tolerances(dtype):
    return GRAD_TOLERANCES[dtype]


def assert_forward_matches_cpu(lib, logits, log_std, coeff, row_weights=None, mean_denominator=None,
                               action_mask=None, **kwargs):
    got, row_stats, layout = emulated_forward(lib, logits, log_std, coeff, row_weights=row_weights,
                                              mean_denominator=mean_denominator, action_mask=action_mask, **kwargs)
    want = dict(zip(KEYS, torch.ops.hybrid_entropy_ext.hybrid_entropy_loss(
        logits, log_std, coeff, *PARAMS.values(), row_weights, mean_denominator, action_mask)[:7]))
    # Both accumulate each head in its own accumulation dtype, in different orders.
    heads = [t for t in (logits, log_std) if t is not None]
    dtype = torch.float64 if all(t.dtype == torch.float64 for t in heads) else torch.float32
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], **VALUE_TOLERANCES[dtype], msg=key)
    return got, row_stats, layout


# --- layouts ----------------------------------------------------------------------------

# (B, K): K <= 1024 is held by warp groups of min(2^ceil(log2 K), 32) lanes; above, a
# block per row, in 16-byte vectors where the rows allow.
WARP_SHAPES = [(1, 1), (37, 3), (300, 4), (65, 16), (9, 33), (40, 64), (5, 100), (3, 1000), (2, 1024)]
BLOCK_SHAPES = [(3, 1025), (2, 3000), (2, 5000)]


@pytest.mark.parametrize("b, k", WARP_SHAPES + BLOCK_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_forward_matches_the_cpu_op(lib, b, k, dtype):
    logits, log_std = inputs(b, k, 3, dtype)
    _, _, layout = assert_forward_matches_cpu(lib, logits, log_std, torch.tensor(0.05))
    assert layout["layout"] == ("warps" if k <= 1024 else "block")


@pytest.mark.parametrize("b, k", [(37, 3), (40, 64), (3, 1000), (3, 1025), (2, 3000)], ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_backward_matches_the_cpu_op(lib, b, k, dtype):
    logits, log_std = inputs(b, k, 3, dtype)
    coeff = torch.tensor(0.05, dtype=torch.float32)
    outputs, row_stats, _ = emulated_forward(lib, logits, log_std, coeff)
    grad_logits, grad_log_std, grad_coeff, launches = emulated_backward(
        lib, logits, log_std, coeff, outputs, row_stats)
    want_logits, want_log_std, want_coeff = cpu_backward(logits, log_std, coeff)
    torch.testing.assert_close(grad_logits.double(), want_logits.double(), **grad_tolerances(dtype))
    torch.testing.assert_close(grad_log_std.double(), want_log_std[0, 0].double(), **grad_tolerances(dtype))
    torch.testing.assert_close(grad_coeff, want_coeff, rtol=1e-5, atol=1e-7)
    assert launches == 1


def test_forward_matches_the_distributions_oracle_in_float64(lib):
    logits, log_std = inputs(41, 7, 2, torch.float64)
    got, _, _ = emulated_forward(lib, logits, log_std, torch.tensor(0.3, dtype=torch.float64))
    want = distributions_oracle(logits, log_std, 0.3, *PARAMS.values())
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("offset", [0, 1, 3], ids=lambda v: f"offset {v}")
def test_long_rows_of_any_alignment_peel_their_first_columns_and_read_vectors(lib, dtype, offset):
    # Row stride 3001 and a start `offset` logits in: every row starts somewhere else in a
    # 16-byte vector. The loads after each row's peel are aligned (a misaligned one aborts
    # this build).
    base, _ = inputs(5, 3001, 1, dtype)
    logits = base[:, offset:3000]
    logits[2, :5] = -math.inf  # the peeled columns of one row masked
    outputs, row_stats, layout = assert_forward_matches_cpu(lib, logits, None, torch.tensor(0.05))
    assert layout["layout"] == "block" and layout["vec"] == 16 // logits.element_size()


def test_long_split_rows_of_odd_length_peel_each_split(lib):
    base, _ = inputs(2, 50257, 1, torch.bfloat16)  # an odd vocabulary: every row misaligned
    logits = base[:, 1:]
    _, _, layout = assert_forward_matches_cpu(lib, logits, None, torch.tensor(0.05))
    assert layout["splits"] > 1


def test_aligned_rows_are_read_in_16_byte_vectors(lib):
    logits, _ = inputs(2, 3000, 1, torch.bfloat16)
    _, _, layout = assert_forward_matches_cpu(lib, logits, None, torch.tensor(0.05))
    assert layout["vec"] == 8


@pytest.mark.parametrize("b, k, dtype, vec", [
    (300, 4, torch.float32, 4),  # a row per lane
    (65, 16, torch.float32, 4),  # 4 lanes per row, 8 rows per warp
    (40, 64, torch.bfloat16, 8),
    (9, 2, torch.float32, 4),  # 8-byte loads: the padded row is narrower than a vector
    (37, 3, torch.float32, 1),  # row stride of 12 bytes: no vectors
], ids=str)
def test_short_aligned_rows_are_read_in_vectors_by_warp_groups(lib, b, k, dtype, vec):
    logits, log_std = inputs(b, k, 2, dtype)
    outputs, row_stats, layout = assert_forward_matches_cpu(lib, logits, log_std, torch.tensor(0.05))
    assert layout["layout"] == "warps" and layout["vec"] == vec


def test_aligned_rows_whose_length_is_not_a_multiple_of_the_vector_mask_the_tail(lib):
    base, _ = inputs(50, 8, 1)
    logits = base[:, :6]  # row stride 32 bytes: vectors of 4, then 2 of 4 logits
    logits[3, 5] = -math.inf
    got, _, layout = assert_forward_matches_cpu(lib, logits, None, torch.tensor(0.05))
    assert layout["vec"] == 4


@pytest.mark.parametrize("b, k", [(5000, 16), (700, 3), (40, 2000)], ids=str)
def test_a_batch_larger_than_one_wave_of_blocks_is_covered_by_looping_blocks(lib, b, k):
    logits, log_std = inputs(b, k, 3)
    logits[b - 1] = -math.inf  # the last row of the last wave
    assert_forward_matches_cpu(lib, logits, log_std, torch.tensor(0.05), multiprocessors=1)


def test_log_std_larger_than_one_wave_of_blocks_is_summed_in_larger_chunks(lib):
    _, log_std = inputs(2000, 1, 64)
    assert_forward_matches_cpu(lib, None, log_std, torch.tensor(0.05), multiprocessors=1)


@pytest.mark.parametrize("k, dtype", [(1031, torch.float32), (50257, torch.bfloat16), (2000, torch.float64)],
                         ids=str)
def test_backward_of_long_rows_of_any_length_matches_the_cpu_op(lib, k, dtype):
    # A block per row: each row starts elsewhere in a vector (K odd), peels its first
    # columns, then reads and writes vectors (a misaligned one aborts this build).
    logits, log_std = inputs(3, k, 2, dtype)
    logits[1, :3] = -math.inf
    coeff = torch.tensor(0.05)
    outputs, row_stats, _ = emulated_forward(lib, logits, log_std, coeff)
    grad_logits, _, _, launches = emulated_backward(lib, logits, log_std, coeff, outputs, row_stats)
    want_logits, _, _ = cpu_backward(logits, log_std, coeff)
    torch.testing.assert_close(grad_logits.double(), want_logits.double(), **grad_tolerances(dtype))
    assert launches == 1 and (grad_logits[1, :3] == 0).all()


@pytest.mark.parametrize("offset", [1, 4], ids=["gradient offset by a logit", "by a whole vector"])
def test_backward_of_long_rows_with_the_gradient_offset_from_the_logits(lib, offset):
    # Offset by one float32 the two never align together: one logit at a time; offset by a
    # vector they do.
    logits, log_std = inputs(3, 2000, 2)
    coeff = torch.tensor(0.05)
    outputs, row_stats, _ = emulated_forward(lib, logits, log_std, coeff)
    grad_logits, _, _, _ = emulated_backward(lib, logits, log_std, coeff, outputs, row_stats,
                                             grad_logits_offset=offset)
    want_logits, _, _ = cpu_backward(logits, log_std, coeff)
    torch.testing.assert_close(grad_logits, want_logits, **grad_tolerances(torch.float32))


def test_a_misaligned_gradient_is_written_one_element_at_a_time(lib):
    # The logits are aligned for vectors, the gradient's start is not: vector stores there
    # would fault (and abort this build, compiled with -fsanitize=alignment).
    logits, log_std = inputs(16, 8, 2)
    coeff = torch.tensor(0.05)
    outputs, row_stats, _ = emulated_forward(lib, logits, log_std, coeff)
    grad_logits, _, _, _ = emulated_backward(lib, logits, log_std, coeff, outputs, row_stats,
                                             grad_logits_offset=1)
    assert grad_logits.data_ptr() % 16 != 0
    want_logits, _, _ = cpu_backward(logits, log_std, coeff)
    torch.testing.assert_close(grad_logits, want_logits, **grad_tolerances(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_long_rows_of_a_small_batch_are_split_over_blocks_and_merged(lib, dtype):
    logits, log_std = inputs(3, 20000, 2, dtype)
    logits[1, 5000:15000] = -math.inf  # whole splits of a row masked
    coeff = torch.tensor(0.05)
    outputs, row_stats, layout = assert_forward_matches_cpu(lib, logits, log_std, coeff)
    assert layout["splits"] > 1 and layout["launches"] == 3
    grad_logits, _, _, _ = emulated_backward(lib, logits, log_std, coeff, outputs, row_stats)
    want_logits, _, _ = cpu_backward(logits, log_std, coeff)
    torch.testing.assert_close(grad_logits.double(), want_logits.double(), **grad_tolerances(dtype))


def test_row_stats_hold_shift_log_sum_exp_and_entropy_like_the_cpu_op(lib):
    logits, _ = inputs(33, 12, 1)
    _, row_stats, _ = emulated_forward(lib, logits, None, torch.tensor(0.05))
    cpu_row_stats = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default(
        logits, None, torch.tensor(0.05), *PARAMS.values())[7]
    torch.testing.assert_close(row_stats, cpu_row_stats, rtol=1e-5, atol=1e-6)


# --- masked actions and rows ------------------------------------------------------------


@pytest.mark.parametrize("k", [4, 100, 3000])
def test_fully_masked_rows_have_entropy_zero_and_gradient_zero(lib, k):
    logits, log_std = inputs(6, k, 2)
    logits[[0, 4]] = -math.inf
    logits[2, ::3] = -math.inf
    coeff = torch.tensor(0.05)
    outputs, row_stats, _ = assert_forward_matches_cpu(lib, logits, log_std, coeff)
    assert torch.isfinite(row_stats).all()
    grad_logits, _, _, _ = emulated_backward(lib, logits, log_std, coeff, outputs, row_stats)
    assert torch.isfinite(grad_logits).all()
    assert (grad_logits[[0, 4]] == 0).all() and (grad_logits[2, ::3] == 0).all()


@pytest.mark.parametrize("k", [4, 100, 3000])
def test_a_nan_logit_gives_nan_entropy(lib, k):
    logits, _ = inputs(4, k, 1)
    logits[1, k // 2] = math.nan
    outputs, _, _ = emulated_forward(lib, logits, None, torch.tensor(0.05))
    assert torch.isnan(outputs["discrete_entropy"])


@pytest.mark.parametrize("b, k", [(1, 2048), (2, 20000)], ids=["row per block", "split rows"])
def test_huge_finite_logits_far_below_the_max_give_entropy_zero_not_nan(lib, b, k):
    # A thread's (and a split's) part far below the row's max: moved there, its s times
    # the shift difference would overflow to -inf, and 0 * inf is NaN.
    logits = torch.full((b, k), -1.5e37)
    logits[:, 0] = 1.5e37
    got, _, layout = assert_forward_matches_cpu(lib, logits, None, torch.tensor(0.05))
    assert layout["layout"] == "block" and got["discrete_entropy"].item() == 0.0


# --- the hybrid loss's action mask ------------------------------------------------------


def hybrid_action_mask(b, k, seed=0):
    """About 60% of the actions allowed, action 0 always, one row with nothing allowed."""
    allowed = torch.rand(b, k, generator=torch.Generator().manual_seed(seed)) < 0.6
    allowed[:, 0] = True
    allowed[b // 2] = False
    return allowed


def assert_masked_forward_and_backward_match_cpu(lib, logits, log_std, allowed):
    """The emulated forward and backward with ``allowed`` against the CPU op's; the layout."""
    coeff = torch.tensor(0.05)
    outputs, row_stats, layout = assert_forward_matches_cpu(lib, logits, log_std, coeff, action_mask=allowed)
    grad_logits, _, _, _ = emulated_backward(lib, logits, log_std, coeff, outputs, row_stats, action_mask=allowed)
    want_logits, _, _ = cpu_backward(logits, log_std, coeff, action_mask=allowed)
    assert (grad_logits[~allowed] == 0).all()
    torch.testing.assert_close(grad_logits.double(), want_logits.double(), **grad_tolerances(logits.dtype))
    return layout


@pytest.mark.parametrize("b, k", [(37, 3), (300, 4), (9, 33), (40, 64), (3, 1000), (3, 1025), (2, 3000), (3, 9000)],
                         ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_action_masked_rows_match_the_cpu_op_forward_and_backward(lib, b, k, dtype):
    # Every layout (rows in warps, a row per block, rows split over blocks) and both
    # backwards (flat for short rows, a block per long row).
    logits, log_std = inputs(b, k, 3, dtype)
    allowed = hybrid_action_mask(b, k)
    layout = assert_masked_forward_and_backward_match_cpu(lib, logits, log_std, allowed)
    assert (layout["splits"] > 1) == (k == 9000)


@pytest.mark.parametrize("k", [7, 64, 3001])
def test_action_masked_rows_off_vector_boundaries_match_the_cpu_op(lib, k):
    # A row stride off the vector width: rows in warps read one logit per load, long rows peel.
    storage, log_std = inputs(20, k + 1, 3)
    assert_masked_forward_and_backward_match_cpu(lib, storage[:, 1:], log_std, hybrid_action_mask(20, k, seed=1))


def test_one_action_mask_broadcast_to_every_row_matches_the_cpu_op(lib):
    logits, log_std = inputs(50, 12, 3)
    assert_masked_forward_and_backward_match_cpu(lib, logits, log_std, hybrid_action_mask(1, 12)[0].expand(50, 12))


def test_an_action_mask_gives_the_results_of_neg_inf_logits(lib):
    logits, log_std = inputs(40, 64, 3)
    allowed = hybrid_action_mask(40, 64)
    coeff = torch.tensor(0.05)
    masked, masked_stats, _ = emulated_forward(lib, logits, log_std, coeff, action_mask=allowed)
    neg_inf = logits.masked_fill(~allowed, -math.inf)
    plain, plain_stats, _ = emulated_forward(lib, neg_inf, log_std, coeff)
    for key in KEYS:
        assert torch.equal(masked[key], plain[key]), key
    got, _, _, _ = emulated_backward(lib, logits, log_std, coeff, masked, masked_stats, action_mask=allowed)
    want, _, _, _ = emulated_backward(lib, neg_inf, log_std, coeff, plain, plain_stats)
    assert torch.equal(got, want)


# --- row weights -----------------------------------------------------------------------


def row_weights(b, dtype=torch.float32):
    weights = torch.rand(b, generator=torch.Generator().manual_seed(b), dtype=torch.float64)
    weights[::3] = 0.0
    return weights.to(dtype)


@pytest.mark.parametrize("b, k", [(300, 4), (40, 64), (3, 1025), (5, 3000), (3, 9000)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_weighted_rows_match_the_cpu_op_forward_and_backward(lib, b, k, dtype):
    # Every layout: rows in warps, a row per block, rows split over blocks; the weights'
    # sum is one more launch before the others in both directions.
    logits, log_std = inputs(b, k, 3, dtype)
    weights = row_weights(b, torch.float16)
    coeff = torch.tensor(0.05)
    outputs, row_stats, layout = assert_forward_matches_cpu(lib, logits, log_std, coeff, row_weights=weights)
    assert (layout["splits"] > 1) == (k == 9000)
    unweighted = emulated_forward(lib, logits, log_std, coeff)[2]
    assert layout["launches"] == unweighted["launches"] + 1
    grad_logits, grad_log_std, grad_coeff, launches = emulated_backward(
        lib, logits, log_std, coeff, outputs, row_stats, row_weights=weights)
    want_logits, want_log_std, want_coeff = cpu_backward(logits, log_std, coeff, row_weights=weights)
    torch.testing.assert_close(grad_logits.double(), want_logits.double(), **grad_tolerances(dtype))
    assert grad_log_std.stride() == want_log_std.stride() == (1, 0)
    torch.testing.assert_close(grad_log_std.double(), want_log_std.double(), **grad_tolerances(dtype))
    torch.testing.assert_close(grad_coeff, want_coeff, rtol=1e-5, atol=1e-7)
    assert launches == 2


def test_weighted_per_sample_log_std_alone_matches_the_cpu_op(lib):
    _, log_std = inputs(700, 1, 13)
    weights = row_weights(700)
    coeff = torch.tensor(0.05)
    outputs, row_stats, _ = assert_forward_matches_cpu(lib, None, log_std, coeff, row_weights=weights,
                                                       multiprocessors=1)
    _, grad_log_std, _, _ = emulated_backward(lib, None, log_std, coeff, outputs, row_stats, row_weights=weights)
    _, want_log_std, _ = cpu_backward(None, log_std, coeff, row_weights=weights)
    torch.testing.assert_close(grad_log_std, want_log_std, rtol=1e-5, atol=1e-8)


def test_weighted_rows_match_the_distributions_oracle_in_float64(lib):
    logits, log_std = inputs(41, 7, 2, torch.float64)
    weights = row_weights(41, torch.float64)
    got, _, _ = emulated_forward(lib, logits, log_std, torch.tensor(0.3, dtype=torch.float64),
                                 row_weights=weights)
    want = distributions_oracle(logits, log_std, 0.3, *PARAMS.values(), row_weights=weights)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)


# --- a given mean denominator -----------------------------------------------------------


def log_std_of_layout(layout, b, d=3):
    """log_std per row ([B, D]), shared ([D]), expanded from one row ([B, D], row stride 0),
    or absent."""
    values = 0.3 * torch.randn(b, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    values = values.float()
    return {"rows": values, "shared": values[0], "expanded": values[0].expand(b, d), "none": None}[layout]


@pytest.mark.parametrize("log_std_layout", ["rows", "shared", "expanded", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("b, k", [(300, 4), (3, 1025), (3, 9000)], ids=str)
def test_a_given_mean_denominator_matches_the_cpu_op_forward_and_backward(lib, b, k, weighted, log_std_layout):
    # Every logits layout (rows in warps, a row per block, rows split over blocks) and
    # every log_std the kernels read: the denominator is read on the device, and a shared
    # log_std's mean scaled by the weights' sum (computed on the device) or the row count.
    logits, _ = inputs(b, k, 3)
    log_std = log_std_of_layout(log_std_layout, b)
    weights = row_weights(b) if weighted else None
    denominator = torch.tensor(7.5, dtype=torch.float64)
    coeff = torch.tensor(0.05)
    outputs, row_stats, layout = assert_forward_matches_cpu(
        lib, logits, log_std, coeff, row_weights=weights, mean_denominator=denominator)
    assert (layout["splits"] > 1) == (k == 9000)
    plain = emulated_forward(lib, logits, log_std, coeff, row_weights=weights)[2]
    assert layout["launches"] == plain["launches"]
    grad_logits, grad_log_std, grad_coeff, _ = emulated_backward(
        lib, logits, log_std, coeff, outputs, row_stats, row_weights=weights, mean_denominator=denominator)
    want_logits, want_log_std, want_coeff = cpu_backward(
        logits, log_std, coeff, row_weights=weights, mean_denominator=denominator)
    torch.testing.assert_close(grad_logits, want_logits, **grad_tolerances(torch.float32))
    if log_std is not None:
        torch.testing.assert_close(grad_log_std.expand_as(want_log_std), want_log_std,
                                   **grad_tolerances(torch.float32))
    torch.testing.assert_close(grad_coeff, want_coeff, rtol=1e-5, atol=1e-7)


def test_a_given_mean_denominator_with_log_std_alone_matches_the_cpu_op(lib):
    _, log_std = inputs(700, 1, 13)
    weights = row_weights(700)
    denominator = torch.tensor(0.25)
    coeff = torch.tensor(0.05)
    outputs, row_stats, _ = assert_forward_matches_cpu(lib, None, log_std, coeff, row_weights=weights,
                                                       mean_denominator=denominator, multiprocessors=1)
    _, grad_log_std, _, _ = emulated_backward(lib, None, log_std, coeff, outputs, row_stats, row_weights=weights,
                                              mean_denominator=denominator)
    _, want_log_std, _ = cpu_backward(None, log_std, coeff, row_weights=weights, mean_denominator=denominator)
    torch.testing.assert_close(grad_log_std, want_log_std, rtol=1e-5, atol=1e-8)


def test_a_given_mean_denominator_matches_the_distributions_oracle_in_float64(lib):
    logits, log_std = inputs(41, 7, 2, torch.float64)
    weights = row_weights(41, torch.float64)
    denominator = torch.tensor(3.0, dtype=torch.float64)
    got, _, _ = emulated_forward(lib, logits, log_std, torch.tensor(0.3, dtype=torch.float64),
                                 row_weights=weights, mean_denominator=denominator)
    want = distributions_oracle(logits, log_std, 0.3, *PARAMS.values(), row_weights=weights,
                                mean_denominator=denominator)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)


# --- heads and coefficients -------------------------------------------------------------


def test_shared_log_std_is_summed_once(lib):
    logits, _ = inputs(10, 5, 1)
    log_std = 0.2 * torch.randn(4)
    assert_forward_matches_cpu(lib, logits, log_std, torch.tensor(0.05))


def test_log_std_alone_runs_only_the_gaussian_blocks(lib):
    _, log_std = inputs(300, 1, 20)
    got, _, layout = assert_forward_matches_cpu(lib, None, log_std, torch.tensor(0.05))
    assert got["discrete_entropy"].item() == 0.0 and layout["launches"] == 2


def test_logits_alone_have_no_gaussian_blocks(lib):
    logits, _ = inputs(20, 6, 1)
    got, _, _ = assert_forward_matches_cpu(lib, logits, None, torch.tensor(0.05))
    assert got["continuous_entropy"].item() == 0.0


def test_log_std_of_another_dtype_than_the_logits(lib):
    logits, log_std = inputs(30, 9, 3, torch.bfloat16, log_std_dtype=torch.float64)
    assert_forward_matches_cpu(lib, logits, log_std, torch.tensor(0.05))


def test_large_per_sample_log_std_spans_several_blocks(lib):
    logits, log_std = inputs(700, 2, 13)
    assert_forward_matches_cpu(lib, logits, log_std, torch.tensor(0.05))


# A per-head coefficient lives on the inputs' device; only a 0-dim one is read on the host.
@pytest.mark.parametrize("coeff, on_host", [
    (torch.tensor(0.07), False), (torch.tensor(0.07), True),
    (torch.tensor(0.07, dtype=torch.float16), False), (torch.tensor(0.07, dtype=torch.float16), True),
    (torch.tensor([0.1, 0.03, 0.5])[::2], False),
], ids=["0-dim device", "0-dim host", "0-dim float16 device", "0-dim float16 host", "per head strided device"])
def test_coefficient_on_device_or_host_scales_the_heads(lib, coeff, on_host):
    logits, log_std = inputs(12, 5, 2)
    outputs, row_stats, _ = assert_forward_matches_cpu(lib, logits, log_std, coeff, coeff_on_host=on_host)
    _, _, grad_coeff, _ = emulated_backward(lib, logits, log_std, coeff, outputs, row_stats, coeff_on_host=on_host)
    _, _, want_coeff = cpu_backward(logits, log_std, coeff)
    torch.testing.assert_close(grad_coeff.double(), want_coeff.double(), rtol=2e-3, atol=1e-6)


def test_missing_upstream_gradients_count_as_zero(lib):
    logits, log_std = inputs(8, 6, 2)
    coeff = torch.tensor(0.05)
    upstream = (None, 1.0, None, None, 2.0, None, None)
    outputs, row_stats, _ = emulated_forward(lib, logits, log_std, coeff)
    grad_logits, grad_log_std, _, _ = emulated_backward(
        lib, logits, log_std, coeff, outputs, row_stats, upstream=upstream)
    want_logits, want_log_std, _ = cpu_backward(logits, log_std, coeff, upstream=upstream)
    torch.testing.assert_close(grad_logits, want_logits, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(grad_log_std, want_log_std[0, 0], rtol=1e-5, atol=1e-8)


def test_backward_without_logits_gradient_writes_only_the_others(lib):
    logits, log_std = inputs(8, 6, 2)
    coeff = torch.tensor(0.05)
    outputs, row_stats, _ = emulated_forward(lib, logits, log_std, coeff)
    grad_logits, grad_log_std, grad_coeff, launches = emulated_backward(
        lib, logits, log_std, coeff, outputs, row_stats, wanted=(False, True, True))
    _, want_log_std, want_coeff = cpu_backward(logits, log_std, coeff)
    assert grad_logits is None and launches == 1
    torch.testing.assert_close(grad_log_std, want_log_std[0, 0], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(grad_coeff, want_coeff, rtol=1e-5, atol=1e-8)


# --- the launch plan --------------------------------------------------------------------


@pytest.mark.parametrize("b, k", [(256, 4), (4096, 16), (512, 64)], ids=lambda v: str(v))
def test_short_rows_take_two_launches_forward_and_one_backward(lib, b, k):
    logits, log_std = inputs(b, k, 8)
    coeff = torch.tensor(0.05)
    outputs, row_stats, layout = emulated_forward(lib, logits, log_std, coeff)
    _, _, _, launches = emulated_backward(lib, logits, log_std, coeff, outputs, row_stats)
    assert layout["launches"] == 2 and launches == 1


def test_two_runs_are_bitwise_equal(lib):
    logits, log_std = inputs(200, 33, 4)
    first, first_stats, _ = emulated_forward(lib, logits, log_std, torch.tensor(0.05))
    second, second_stats, _ = emulated_forward(lib, logits, log_std, torch.tensor(0.05))
    assert torch.equal(first_stats, second_stats)
    for key in KEYS:
        assert torch.equal(first[key], second[key]), key


def planned_forward(lib, batch, k, log_std_count=0, multiprocessors=MULTIPROCESSORS,
                    threads_per_multiprocessor=2048):
    out = lib.plan_forward(batch, k, log_std_count, multiprocessors, threads_per_multiprocessor)
    return {"layout": ("warps", "block")[out[0]], "logit_blocks": out[1], "log_std_blocks": out[2],
            "splits": out[3]}


@pytest.mark.parametrize("k", [4, 64, 5000], ids=lambda v: f"K={v}")
def test_the_grid_of_any_batch_is_at_most_one_wave_of_blocks(lib, k):
    # 2048 resident threads per multiprocessor: blocks of 256 threads (warps; log_std) or
    # 128 to 512 (a row per block).
    wave = MULTIPROCESSORS * 2048 // (256 if k <= 1024 else 128)
    plan = planned_forward(lib, 1 << 40, k, log_std_count=1 << 40)
    assert 0 < plan["logit_blocks"] <= wave and plan["splits"] == 1
    assert 0 < plan["log_std_blocks"] <= MULTIPROCESSORS * 8


@pytest.mark.parametrize("threads, blocks_per_multiprocessor", [(2048, 8), (1536, 6)])
def test_one_wave_follows_the_resident_threads_of_the_gpu(lib, threads, blocks_per_multiprocessor):
    plan = planned_forward(lib, 1 << 30, 16, threads_per_multiprocessor=threads)
    assert plan["logit_blocks"] == MULTIPROCESSORS * blocks_per_multiprocessor  # of 256 threads


def test_an_empty_batch_plans_no_logit_blocks(lib):
    # The op's checks reject B = 0 first; the plan does not divide by it either.
    plan = planned_forward(lib, 0, 20000, log_std_count=3)
    assert plan["logit_blocks"] == 0 and plan["log_std_blocks"] == 1


DIVISORS = [1, 2, 3, 5, 7, 16, 1000, 1025, 32000, 50257, 151936, 2**20 + 1, 2**30, 2**31 - 1]


@pytest.mark.parametrize("divisor", DIVISORS)
def test_the_backward_row_divider_is_exact_for_every_flat_index_below_2_to_31(lib, divisor):
    # The flat backward finds an element's row with a multiply-high (FastDivider); 32-bit
    # indices are used only below 2^31 elements.
    rng = np.random.default_rng(divisor)
    near_multiples = (np.arange(-2, 3)[:, None] + divisor * rng.integers(0, 2**31 // divisor, 64)).ravel()
    dividends = np.concatenate([np.arange(0, 4096), rng.integers(0, 2**31, 100_000), near_multiples,
                                [2**31 - 1]])
    dividends = dividends[(dividends >= 0) & (dividends < 2**31)].astype(np.uint32)
    quotients = lib.fast_divide(torch.from_numpy(dividends.astype(np.int64)), divisor).numpy()
    np.testing.assert_array_equal(quotients, dividends // np.uint32(divisor))



# --- log_prob_and_entropy ---------------------------------------------------------------

TOKEN_BACKWARD_OP = torch.ops.hybrid_entropy_ext._log_prob_and_entropy_backward


def token_inputs(rows, k, dtype, masked_fraction=0.0, seed=0):
    """Logits [rows, k] with a -inf column, a fully -inf row, actions and a mask whose
    dropped rows hold NaN and actions out of range (never read)."""
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(rows, k, generator=generator, dtype=torch.float64)).to(dtype)
    actions = torch.randint(0, k, (rows,), generator=generator)
    if k > 2:
        logits[0, 1] = -math.inf
        actions[0] = 1
    if rows > 2:
        logits[1] = -math.inf
    mask = torch.rand(rows, generator=generator) >= masked_fraction
    logits[~mask] = math.nan
    actions[~mask] = -100
    return logits, actions, mask


def assert_token_terms_match_the_cpu_op(lib, logits, actions, mask, temperature=1.0, upstream=(True, True)):
    got = lib.log_prob_and_entropy(logits, actions, mask, temperature)
    launch = lib.last_token_forward()
    want = torch.ops.hybrid_entropy_ext.log_prob_and_entropy(logits, actions, mask, temperature)
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    torch.testing.assert_close(got[0], want[0], **VALUE_TOLERANCES[acc], msg="log_prob")
    torch.testing.assert_close(got[1], want[1], **VALUE_TOLERANCES[acc], msg="entropy")
    generator = torch.Generator().manual_seed(1)
    leading = logits.shape[:-1]
    grads = [torch.randn(leading, generator=generator, dtype=acc) if wanted else None for wanted in upstream]
    if actions is None:
        grads[0] = None
    got_grad = lib._log_prob_and_entropy_backward(*grads, logits, actions, mask, got[2], temperature)
    want_grad = TOKEN_BACKWARD_OP(*grads, logits, actions, mask, want[2], temperature)
    assert_rows_close(got_grad, want_grad, **grad_tolerances(logits.dtype))
    return got, launch


# K <= 1024 in warp groups (vectors where aligned), above a block per row; the backward
# is flat below 1025 columns and a block per row from there.
TOKEN_SHAPES = [(37, 3), (65, 16), (9, 33), (5, 100), (3, 1024), (3, 1025), (2, 3000)]


@pytest.mark.parametrize("rows, k", TOKEN_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_token_terms_match_the_cpu_op(lib, rows, k, dtype):
    configure(lib)
    logits, actions, mask = token_inputs(rows, k, dtype, masked_fraction=0.3)
    _, (layout, log2_cols, *_) = assert_token_terms_match_the_cpu_op(lib, logits, actions, mask)
    assert layout == (1 if k > 1024 else 0)
    if k <= 1024:
        assert log2_cols == math.ceil(math.log2(k))


@pytest.mark.parametrize("k", [16, 3000], ids=str)
def test_tempered_token_terms_match_the_cpu_op(lib, k):
    configure(lib)
    logits, actions, mask = token_inputs(7, k, torch.float32)
    assert_token_terms_match_the_cpu_op(lib, logits, actions, mask, temperature=0.6)


@pytest.mark.parametrize("upstream", [(True, False), (False, True)], ids=["log_prob", "entropy"])
@pytest.mark.parametrize("k", [16, 3000], ids=str)
def test_token_terms_backward_of_one_output_matches_the_cpu_op(lib, k, upstream):
    configure(lib)
    logits, actions, mask = token_inputs(6, k, torch.float32, masked_fraction=0.3)
    assert_token_terms_match_the_cpu_op(lib, logits, actions, mask, upstream=upstream)


@pytest.mark.parametrize("k", [16, 3000], ids=str)
def test_token_terms_without_actions_or_mask_match_the_cpu_op(lib, k):
    configure(lib)
    logits, _, _ = token_inputs(6, k, torch.float32)
    (log_prob, entropy, _), _ = assert_token_terms_match_the_cpu_op(lib, logits, None, None)
    assert log_prob.shape == (0,) and entropy.shape == (6,)


@pytest.mark.parametrize("k", [16, 3000], ids=str)
def test_token_terms_of_dropped_rows_are_zero_and_nan_free(lib, k):
    configure(lib)
    logits, actions, mask = token_inputs(8, k, torch.float32, masked_fraction=0.5)
    log_prob, entropy, row_stats = lib.log_prob_and_entropy(logits, actions, mask, 1.0)
    grad = lib._log_prob_and_entropy_backward(torch.ones(8), torch.ones(8), logits, actions, mask, row_stats, 1.0)
    assert torch.all(log_prob[~mask] == 0) and torch.all(entropy[~mask] == 0)
    assert torch.all(grad[~mask] == 0)
    assert not grad.isnan().any()


@pytest.mark.parametrize("offset", [1, 3])
@pytest.mark.parametrize("k", [64, 3000], ids=str)
def test_token_terms_of_rows_off_vector_boundaries_match_the_cpu_op(lib, k, offset):
    """Logits sliced one or three columns into a wider buffer, and a gradient that starts
    off a vector boundary: the peel and element-wise paths."""
    configure(lib, output_offset=offset)
    logits, actions, mask = token_inputs(5, k + offset, torch.float32)
    assert_token_terms_match_the_cpu_op(lib, logits[:, offset:], actions.clamp(max=k - 1), mask)


def test_token_terms_of_leading_dims_match_the_cpu_op(lib):
    configure(lib)
    logits, actions, mask = token_inputs(24, 16, torch.float32, masked_fraction=0.3)
    assert_token_terms_match_the_cpu_op(
        lib, logits.view(4, 6, 16).transpose(0, 1), actions.view(4, 6).t(), mask.view(4, 6).t())


def test_token_terms_of_more_rows_than_one_wave_loop_over_them(lib):
    configure(lib, multiprocessors=1, threads_per_multiprocessor=256)
    logits, actions, mask = token_inputs(100, 8, torch.float32, masked_fraction=0.2)
    _, launch = assert_token_terms_match_the_cpu_op(lib, logits, actions, mask)
    assert launch[4] == 1


# --- log_prob_and_entropy with an action mask -------------------------------------------
# Held to the float64 oracle of tests/oracle.py fed the logits the action mask leaves by
# its definition (a ruled-out action's logit -inf), gradients by autograd through it.


def action_masked_logits(logits, action_mask):
    """The logits an action mask leaves, by its definition: a ruled-out action is a -inf
    logit, whatever the logit stored there."""
    return logits.masked_fill(~action_mask, -math.inf)


def action_mask_inputs(rows, k, dtype, seed=0):
    """token_inputs' logits and actions, a mask that keeps rows 0 to 3 and drops about a
    third of the others (NaN logits and out-of-range actions there), and an action mask
    [rows, k] that rules out about a third of the actions, with NaN stored at every
    ruled-out logit: row 2 has nothing allowed, row 3's taken action is ruled out, every
    other row's taken action is allowed."""
    logits, actions, _ = token_inputs(rows, k, dtype, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    mask = torch.rand(rows, generator=generator) >= 1 / 3
    mask[:4] = True
    action_mask = torch.rand(rows, k, generator=generator) >= 1 / 3
    action_mask[torch.arange(rows), actions] = True
    action_mask[2] = False
    action_mask[3, actions[3]] = False
    logits[~action_mask] = math.nan
    logits[~mask] = math.nan
    actions[~mask] = -100
    return logits, actions, mask, action_mask


def assert_action_masked_terms_match_the_oracle(lib, logits, actions, mask, action_mask, temperature=1.0,
                                                upstream=(True, True)):
    """The emulated op's values and gradient against the float64 oracle of the action-masked
    logits (its gradient by autograd, held by test_token_terms.py's error model); returns
    (log_prob, entropy, grad_logits) and the forward's launch."""
    log_prob, entropy, row_stats = lib.log_prob_and_entropy(logits, actions, mask, temperature, action_mask)
    launch = lib.last_token_forward()
    leaf = logits.detach().double().requires_grad_(True)
    want_log_prob, want_entropy = token_terms_oracle(
        action_masked_logits(leaf, action_mask), actions, mask, temperature)
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    torch.testing.assert_close(entropy.double(), want_entropy.detach(), **VALUE_TOLERANCES[acc], msg="entropy")
    if actions is not None:
        torch.testing.assert_close(log_prob.double(), want_log_prob.detach(), **VALUE_TOLERANCES[acc],
                                   msg="log_prob")
    generator = torch.Generator().manual_seed(1)
    leading = logits.shape[:-1]
    grads = [torch.randn(leading, generator=generator, dtype=acc) if wanted else None for wanted in upstream]
    if actions is None:
        grads[0] = None
    grad_logits = lib._log_prob_and_entropy_backward(*grads, logits, actions, mask, row_stats, temperature,
                                                     action_mask)
    pairs = [(o, g.double()) for o, g in zip((want_log_prob, want_entropy), grads) if g is not None]
    (want_grad,) = torch.autograd.grad([o for o, _ in pairs], leaf, [g for _, g in pairs])
    assert not entropy.isnan().any() and not log_prob.isnan().any() and not grad_logits.isnan().any()
    assert (grad_logits[~action_mask] == 0).all()
    assert_grad_close(grad_logits, want_grad, action_masked_logits(logits, action_mask), mask, temperature,
                      grads[0], grads[1])
    return (log_prob, entropy, grad_logits), launch


# Forward in warp groups (with and without vectors) and a row per block; backward flat and
# a block per row.
ACTION_MASK_SHAPES = [(37, 3), (65, 16), (9, 33), (8, 100), (6, 1024), (6, 1025), (6, 3000)]


@pytest.mark.parametrize("rows, k", ACTION_MASK_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_action_masked_token_terms_match_the_oracle(lib, rows, k, dtype):
    configure(lib)
    logits, actions, mask, action_mask = action_mask_inputs(rows, k, dtype)
    (log_prob, entropy, grad), (layout, *_) = assert_action_masked_terms_match_the_oracle(
        lib, logits, actions, mask, action_mask)
    assert layout == (1 if k > 1024 else 0)
    # Nothing allowed: entropy 0, log_prob -inf and gradient 0, as an all -inf row.
    assert entropy[2] == 0 and log_prob[2] == -math.inf and (grad[2] == 0).all()
    # A ruled-out taken action: log_prob -inf, and no g_a at its gradient (0).
    assert log_prob[3] == -math.inf and grad[3, actions[3]] == 0
    # Dropped rows: zeros.
    assert (entropy[~mask] == 0).all() and (log_prob[~mask] == 0).all() and (grad[~mask] == 0).all()


@pytest.mark.parametrize("k", [16, 33, 3000], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_token_terms_with_one_action_mask_broadcast_to_every_row_match_the_oracle(lib, k, dtype):
    # Row stride 0: every row reads the same flags.
    configure(lib)
    logits, actions, mask = token_inputs(7, k, dtype, masked_fraction=0.3)
    mask_row = torch.rand(k, generator=torch.Generator().manual_seed(2)) >= 1 / 3
    mask_row[0] = True
    actions = torch.where(mask & ~mask_row[actions.clamp(min=0)], 0, actions)
    logits[mask[:, None] & ~mask_row] = math.nan
    action_mask = mask_row.expand(7, k)
    assert action_mask.stride() == (0, 1)
    assert_action_masked_terms_match_the_oracle(lib, logits, actions, mask, action_mask)


@pytest.mark.parametrize("k", [16, 3000], ids=str)
def test_action_masked_tempered_token_terms_match_the_oracle(lib, k):
    configure(lib)
    logits, actions, mask, action_mask = action_mask_inputs(7, k, torch.float32)
    assert_action_masked_terms_match_the_oracle(lib, logits, actions, mask, action_mask, temperature=0.6)


@pytest.mark.parametrize("upstream", [(True, False), (False, True)], ids=["log_prob", "entropy"])
@pytest.mark.parametrize("k", [16, 3000], ids=str)
def test_action_masked_token_terms_backward_of_one_output_matches_the_oracle(lib, k, upstream):
    configure(lib)
    logits, actions, mask, action_mask = action_mask_inputs(6, k, torch.float32)
    assert_action_masked_terms_match_the_oracle(lib, logits, actions, mask, action_mask, upstream=upstream)


@pytest.mark.parametrize("k", [16, 3000], ids=str)
def test_action_masked_token_terms_without_actions_or_mask_match_the_oracle(lib, k):
    configure(lib)
    logits, _, mask, action_mask = action_mask_inputs(6, k, torch.float32)
    logits[~mask] = 0.5  # every row is read
    logits[~action_mask] = math.nan
    (log_prob, _, _), _ = assert_action_masked_terms_match_the_oracle(lib, logits, None, None, action_mask)
    assert log_prob.shape == (0,)


@pytest.mark.parametrize("offset", [1, 3])
@pytest.mark.parametrize("k", [64, 3000], ids=str)
def test_action_masked_token_terms_of_rows_off_vector_boundaries_match_the_oracle(lib, k, offset):
    """The peel and element-wise paths: logits and action mask placed `offset` columns into
    wider rows (row strides other than K), a gradient that starts off a vector boundary."""
    configure(lib, output_offset=offset)
    logits, actions, mask, action_mask = action_mask_inputs(6, k, torch.float32)
    wide_logits = torch.zeros(6, k + offset)
    wide_logits[:, offset:] = logits
    wide_action_mask = torch.ones(6, k + offset, dtype=torch.bool)
    wide_action_mask[:, offset:] = action_mask
    assert_action_masked_terms_match_the_oracle(lib, wide_logits[:, offset:], actions, mask,
                                                wide_action_mask[:, offset:])


def test_action_masked_token_terms_of_leading_dims_match_the_oracle(lib):
    configure(lib)
    logits, actions, mask, action_mask = action_mask_inputs(24, 16, torch.float32)
    assert_action_masked_terms_match_the_oracle(
        lib, logits.view(4, 6, 16).transpose(0, 1), actions.view(4, 6).t(), mask.view(4, 6).t(),
        action_mask.view(4, 6, 16).transpose(0, 1))


@pytest.mark.parametrize("k", [16, 33, 3000], ids=str)
def test_token_terms_with_an_all_true_action_mask_are_bitwise_those_without(lib, k):
    configure(lib)
    logits, actions, mask = token_inputs(6, k, torch.float32, masked_fraction=0.3)
    every = torch.ones(6, k, dtype=torch.bool)
    without = lib.log_prob_and_entropy(logits, actions, mask, 1.0)
    with_all = lib.log_prob_and_entropy(logits, actions, mask, 1.0, every)
    for a, b in zip(without, with_all):
        assert torch.equal(a, b)
    grads = (torch.randn(6), torch.randn(6))
    assert torch.equal(
        lib._log_prob_and_entropy_backward(*grads, logits, actions, mask, without[2], 1.0),
        lib._log_prob_and_entropy_backward(*grads, logits, actions, mask, without[2], 1.0, every))


# --- sub-heads, normalized entropy, parameterized actions -------------------------------


def loss_and_grads(ops, logits, log_std, coeff, options, wanted=(True, True, True), params=PARAMS,
                   row_weights=None, action_mask=None, mean_denominator=None):
    """The forward's outputs (the seven, ``row_stats``, ``discrete_entropy_per_head``) and
    the backward's gradients for UPSTREAM, of ``ops`` (the emulated CUDA ops or the CPU
    op's namespace). ``options``: discrete_sizes, discrete_head_thresholds,
    normalize_discrete_entropy, parameterized_actions."""
    trailing = (row_weights, mean_denominator, action_mask, options.get("discrete_sizes"),
                options.get("discrete_head_thresholds"), options.get("normalize_discrete_entropy", False),
                options.get("parameterized_actions", False))
    out = ops.hybrid_entropy_loss(logits, log_std, coeff, *params.values(), *trailing)
    grads = [torch.tensor(g, dtype=out[0].dtype) if g is not None else None for g in UPSTREAM]
    grad_logits, grad_log_std, grad_coeff = ops._hybrid_entropy_loss_backward(
        *grads, logits, log_std, coeff, out[7], out[5], out[6], out[8], list(wanted), *params.values(),
        *trailing)
    result = dict(zip(KEYS, out[:7]))
    result.update(row_stats=out[7], discrete_entropy_per_head=out[8])
    for name, grad, want in zip(("grad_logits", "grad_log_std", "grad_coeff"),
                                (grad_logits, grad_log_std, grad_coeff), wanted):
        if want:
            result[name] = grad
    return result


def assert_emulated_matches_cpu(lib, logits, log_std, options, wanted=(True, True, True), coeff=None,
                                multiprocessors=MULTIPROCESSORS, **kwargs):
    """The emulated CUDA op's values, statistics and gradients against the CPU op's, the
    gradients' layouts included; returns the number of launches of the backward."""
    coeff = torch.tensor(0.05) if coeff is None else coeff
    configure(lib, multiprocessors)
    got = loss_and_grads(lib, logits, log_std, coeff, options, wanted, **kwargs)
    backward_launches = lib.last_launches()
    configure(lib)
    want = loss_and_grads(torch.ops.hybrid_entropy_ext, logits, log_std, coeff, options, wanted, **kwargs)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    for key in KEYS + ("discrete_entropy_per_head", "row_stats"):
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], **VALUE_TOLERANCES[dtype], msg=key)
    tolerances = dict(grad_tolerances(logits.dtype))
    if options.get("parameterized_actions"):
        # A parameterized element p (log p (-g) + (a c[k] - g h - a h_c)) cancels terms of
        # the size of a c[k], not of the row's largest gradient: its rounding is about
        # u a c[k], the atol the CPU kernels' own tests hold against float64
        # (tests/test_parameterized_actions.py).
        tolerances["atol"] = max(tolerances["atol"], 1e-7)
    for key in ("grad_logits", "grad_log_std"):
        if key in want and want[key].numel() > 0:
            assert got[key].shape == want[key].shape and got[key].stride() == want[key].stride(), key
            assert_rows_close(got[key].double(), want[key].double(), **tolerances)
    if "grad_coeff" in want:
        torch.testing.assert_close(got["grad_coeff"], want["grad_coeff"], rtol=1e-5, atol=1e-7)
    return backward_launches


def action_mask_of(b, k, seed=5):
    allowed = torch.rand(b, k, generator=torch.Generator().manual_seed(seed)) < 0.6
    allowed[::7] = False  # rows without an allowed action: entropy 0, normalizer 0
    allowed[1::7, 1:] = False  # one allowed action: normalizer 0
    return allowed


# Sub-heads in warp groups (a one-column head, an odd width, vectors where a head's columns
# are aligned), with a 1100-column head a block per row, and with a 9000-column head of a
# small batch, rows split over blocks.
SUB_HEADS = [([3, 5, 2], 37), ([4, 4, 4, 4], 300), ([1, 33, 7], 9), ([2, 1100], 5), ([9000, 3], 3)]
# A threshold above and one below each head's entropy: some sub-heads' penalties active.
HEAD_THRESHOLDS = {3: 0.5, 5: 5.0, 2: 0.1, 4: 2.0, 1: 0.3, 33: 0.2, 7: 9.0, 1100: 8.0, 9000: 0.5}


@pytest.mark.parametrize("sizes, b", SUB_HEADS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "action-mask"])
def test_sub_heads_match_the_cpu_op_forward_and_backward(lib, sizes, b, dtype, masked):
    # Each sub-head's rows run on its columns (the statistics' and the gradient's pitch the
    # whole width's), its record and its partial sums reach the finish, which sums the
    # heads' means and their own penalties; each head's backward is its penalty's.
    logits, log_std = inputs(b, sum(sizes), 3, dtype)
    options = dict(discrete_sizes=sizes, discrete_head_thresholds=[HEAD_THRESHOLDS[k] for k in sizes])
    allowed = action_mask_of(b, sum(sizes)) if masked else None
    launches = assert_emulated_matches_cpu(lib, logits, log_std, options, action_mask=allowed)
    assert launches == len(sizes)  # one backward launch per sub-head


def test_sub_heads_take_one_row_launch_each_and_one_finish(lib):
    logits, log_std = inputs(40, 12, 3)
    configure(lib)
    lib.hybrid_entropy_loss(logits, log_std, torch.tensor(0.05), *PARAMS.values(), None, None, None, [4, 4, 4])
    assert lib.last_launches() == 3 + 1


def test_weighted_sub_heads_with_one_threshold_for_all_match_the_cpu_op(lib):
    logits, log_std = inputs(300, 10, 3)
    assert_emulated_matches_cpu(lib, logits, log_std, dict(discrete_sizes=[6, 4]), row_weights=row_weights(300))


def test_sub_heads_match_the_multi_categorical_oracle_in_float64(lib):
    logits, log_std = inputs(41, 9, 2, torch.float64)
    sizes, thresholds = [2, 3, 4], [0.5, 1.5, 0.2]
    coeff = torch.tensor(0.3, dtype=torch.float64)
    configure(lib)
    got = loss_and_grads(lib, logits, log_std, coeff, dict(discrete_sizes=sizes, discrete_head_thresholds=thresholds))
    want = sub_heads_oracle(logits, log_std, 0.3, sizes, thresholds, continuous_min_entropy_threshold=10.0)
    for key in KEYS + ("discrete_entropy_per_head",):
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("b, k", [(300, 4), (37, 64), (3, 1025), (3, 9000)], ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "action-mask"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_normalized_entropy_matches_the_cpu_op_forward_and_backward(lib, b, k, masked, weighted):
    # Without a mask one normalizer for every row, in the finish and the gradient's scale;
    # with one, each row's, computed by a launch before the rows' in both directions.
    logits, log_std = inputs(b, k, 3)
    allowed = action_mask_of(b, k) if masked else None
    weights = row_weights(b) if weighted else None
    launches = assert_emulated_matches_cpu(
        lib, logits, log_std, dict(normalize_discrete_entropy=True), action_mask=allowed, row_weights=weights)
    assert launches == 1 + masked + weighted


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "action-mask"])
def test_normalized_sub_heads_match_the_cpu_op(lib, masked):
    logits, log_std = inputs(65, 16, 3)
    allowed = action_mask_of(65, 16) if masked else None
    options = dict(discrete_sizes=[4, 4, 8], discrete_head_thresholds=[0.5, 0.9, 0.2],
                   normalize_discrete_entropy=True)
    assert_emulated_matches_cpu(lib, logits, log_std, options, action_mask=allowed)


def parameterized_heads(b, k, p, dtype=torch.float32, layout="rows"):
    """logits [B, K] and log_std [B, K, P] ("rows"), [K, P] ("shared") or one row expanded
    to [B, K, P] ("expanded")."""
    generator = torch.Generator().manual_seed(b * k + p)
    logits = (2.0 * torch.randn(b, k, generator=generator)).to(dtype)
    log_std = (0.5 * torch.randn(b, k, p, generator=generator) - 0.3).to(dtype)
    return logits, {"rows": log_std, "shared": log_std[0], "expanded": log_std[0].expand(b, k, p)}[layout]


@pytest.mark.parametrize("b, k, p", [(37, 5, 2), (300, 16, 3), (9, 40, 1), (3, 1100, 2)], ids=str)
@pytest.mark.parametrize("layout", ["rows", "shared", "expanded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_parameterized_actions_match_the_cpu_op_forward_and_backward(lib, b, k, p, layout, dtype):
    # h_c of every row after the discrete rows (row 3 of row_stats), H_c their mean; the
    # backward's logits and log_std gradients in one launch, a shared log_std's summed
    # over the warps in order by a second.
    logits, log_std = parameterized_heads(b, k, p, dtype, layout)
    launches = assert_emulated_matches_cpu(lib, logits, log_std, dict(parameterized_actions=True))
    assert launches == (2 if layout == "shared" else 1)


@pytest.mark.parametrize("layout", ["rows", "shared"])
def test_parameterized_actions_under_a_mask_weights_and_normalization_match_the_cpu_op(lib, layout):
    logits, log_std = parameterized_heads(70, 12, 3, layout=layout)
    options = dict(parameterized_actions=True, normalize_discrete_entropy=True)
    assert_emulated_matches_cpu(lib, logits, log_std, options, action_mask=action_mask_of(70, 12),
                                row_weights=row_weights(70))


@pytest.mark.parametrize("layout", ["rows", "shared"])
def test_parameterized_rows_of_a_grid_smaller_than_the_batch_match_the_cpu_op(lib, layout):
    # One multiprocessor: a wave of 8 blocks of 8 warps for 300 rows, so each warp loops
    # over several rows, and each of a shared log_std's warp sums adds several.
    logits, log_std = parameterized_heads(300, 16, 3, layout=layout)
    assert_emulated_matches_cpu(lib, logits, log_std, dict(parameterized_actions=True), multiprocessors=1,
                                action_mask=action_mask_of(300, 16), row_weights=row_weights(300))


@pytest.mark.parametrize(
    "options",
    [dict(discrete_sizes=[4, 4, 8], discrete_head_thresholds=[0.5, 0.9, 0.2]),
     dict(discrete_sizes=[4, 4, 8], normalize_discrete_entropy=True),
     dict(parameterized_actions=True)],
    ids=["sub-heads", "normalized sub-heads", "parameterized"],
)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_a_given_mean_denominator_with_the_action_space_options_matches_the_cpu_op(lib, options, weighted):
    # The sub-heads' finish, the h_c rows' mean and the backward's scales divide by the
    # given denominator, read on the device.
    b = 65
    if options.get("parameterized_actions"):
        logits, log_std = parameterized_heads(b, 16, 3)
    else:
        logits, log_std = inputs(b, 16, 3)
    assert_emulated_matches_cpu(lib, logits, log_std, options, action_mask=action_mask_of(b, 16),
                                row_weights=row_weights(b) if weighted else None,
                                mean_denominator=torch.tensor(40.0, dtype=torch.float64))


@pytest.mark.parametrize("wanted", [(True, False, False), (False, True, False), (False, False, True)],
                         ids=["logits", "log_std", "coefficient"])
@pytest.mark.parametrize("layout", ["rows", "shared"])
def test_one_parameterized_gradient_alone_matches_the_cpu_op(lib, wanted, layout):
    logits, log_std = parameterized_heads(40, 6, 2, layout=layout)
    assert_emulated_matches_cpu(lib, logits, log_std, dict(parameterized_actions=True), wanted=wanted)


# Sub-heads in warp groups (vectors where a head's columns are aligned, one column, an
# odd width) and, at 1100 columns, a block per row forward (and backward where the logits'
# and the gradient's row pitches keep their rows equally aligned: the contiguous layout;
# the strided one's backward is flat).
TOKEN_SUB_HEADS = [[3, 5, 2], [4, 4, 4, 4], [1, 33, 7], [2, 1100]]


@pytest.mark.parametrize("sizes", TOKEN_SUB_HEADS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "row stride K + 3, one action-mask row"])
def test_token_terms_with_sub_heads_match_the_cpu_op(lib, sizes, dtype, layout):
    # Each sub-head's kernels run on its columns (a column offset, the statistics' and the
    # gradient's pitch the whole width's); a row's terms are the heads' sums.
    configure(lib)
    rows, k = 23, sum(sizes)
    generator = torch.Generator().manual_seed(2)
    logits = (3 * torch.randn(rows, k + 3, generator=generator, dtype=torch.float64)).to(dtype)
    logits = logits[:, 3:] if layout != "contiguous" else logits[:, 3:].contiguous()
    mask = torch.rand(rows, generator=generator) < 0.7
    logits[~mask] = math.nan
    actions = torch.stack([torch.randint(0, size, (rows,), generator=generator) for size in sizes], dim=-1)
    actions[~mask] = -100  # dropped rows' actions are not read
    allowed = torch.rand(rows if layout == "contiguous" else 1, k, generator=generator) < 0.8
    allowed = allowed.expand(rows, k)  # some taken actions ruled out: log_prob -inf
    got = lib.log_prob_and_entropy(logits, actions, mask, 0.8, allowed, sizes)
    launch = lib.last_token_forward()
    assert lib.last_launches() == len(sizes)  # one forward launch per sub-head
    want = torch.ops.hybrid_entropy_ext.log_prob_and_entropy(logits, actions, mask, 0.8, allowed, sizes)
    assert got[2].shape == (3, len(sizes) * rows)
    for name, g, w in zip(("log_prob", "entropy", "row_stats"), got, want):
        torch.testing.assert_close(g, w, **VALUE_TOLERANCES[torch.float32], msg=name)
    assert launch[0] == (1 if sizes[-1] > 1024 else 0)  # the last sub-head's layout
    grads = [torch.randn(rows, generator=generator), torch.randn(rows, generator=generator)]
    got_grad = lib._log_prob_and_entropy_backward(*grads, logits, actions, mask, got[2], 0.8, allowed, sizes)
    assert lib.last_launches() == len(sizes)
    want_grad = TOKEN_BACKWARD_OP(*grads, logits, actions, mask, want[2], 0.8, allowed, sizes)
    assert_rows_close(got_grad, want_grad, **grad_tolerances(dtype))
