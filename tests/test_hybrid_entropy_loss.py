"""Values and gradients of every output of the fused ``hee.hybrid_entropy_loss``.

The fused op is held to an independent oracle written in this file: the formulas of
docs/design.md applied to entropies from ``torch.distributions`` (``Categorical`` and
``Normal``), evaluated in float64 with autograd deriving the gradients. It is also held
to the project's pure-PyTorch ``hee.reference.hybrid_entropy_loss``.

Every test runs once per CPU kernel build and once on CUDA (``backend`` fixture in
conftest.py; the CUDA cases are skipped without a GPU). Inputs are built on the CPU and the
op is called through :func:`fused_loss`, which runs it on the test's device and brings its
outputs back: oracles, gradients and comparisons stay on the CPU.

The tests of what every form of the op shares (values and gradients against the oracle,
gradcheck, output keys and dtypes) run each variant of op_variants.py: both heads, one
head, a shared ``[D]`` log_std, a per-head ``[2]`` coefficient, from distributions, the
regularizer's forward. The others are about one call (a shape, a layout, a mask, a value).
"""

import inspect
import math
from typing import Callable, Sequence

import pytest
import torch
from torch.distributions import Categorical

import hybrid_entropy_ext as hee
from common_utils import HALF_DTYPES, UNIT_ROUNDOFF, fused_loss_on, run_on, to_device
from oracle import KEYS, HALF_LOG_2PI_E, OUTPUT_WEIGHTS, distributions_oracle
from op_variants import OP_VARIANTS, make_sample, variants_without_a_head


# The public order of the arguments, so that a positional call means the same everywhere:
# the five hyper-parameters, the aggregation, then the action space's options.
PUBLIC_ARGUMENT_ORDER = (
    "logits", "log_std", "entropy_coeff", "discrete_entropy_weight", "continuous_entropy_weight",
    "min_entropy_threshold", "continuous_min_entropy_threshold", "penalty_multiplier",
    "sample_mask", "loss_agg_mode", "loss_scale_factor", "action_mask", "discrete_sizes",
    "parameterized_actions", "normalize_discrete_entropy", "discrete_head_thresholds",
)


@pytest.mark.parametrize("loss", [hee.hybrid_entropy_loss, hee.reference.hybrid_entropy_loss],
                         ids=["fused", "reference"])
def test_arguments_are_in_the_public_order(loss):
    assert tuple(inspect.signature(loss).parameters) == PUBLIC_ARGUMENT_ORDER


def test_a_positional_call_with_every_argument_means_the_same_for_the_fused_op_and_the_reference():
    logits = torch.randn(6, 4, dtype=torch.float64)
    log_std = torch.randn(4, 2, dtype=torch.float64)
    args = (logits, log_std, 0.01, 1.0, 0.5, 0.1, 0.1, 3.0, None, "token-mean", None, None, None,
            True, True, None)
    torch.testing.assert_close(hee.hybrid_entropy_loss(*args), hee.reference.hybrid_entropy_loss(*args))

# The device the op runs on in the current test, set by the autouse fixture below.
DEVICE = "cpu"


@pytest.fixture(autouse=True)
def _op_device(backend):
    """Every test runs once per backend: each CPU kernel build, and CUDA."""
    global DEVICE
    DEVICE = backend
    yield backend
    DEVICE = "cpu"


def fused_loss(*args, **kwargs):
    """``hee.hybrid_entropy_loss`` on the test's device, CPU tensors in and out."""
    return fused_loss_on(DEVICE, *args, **kwargs)


def on_device(t):
    """``t`` moved to the test's device, differentiably; non-tensors pass through.

    Views that a test builds to check a layout (transposes, slices, expansions) are taken
    of this, on the device: moving a non-dense view would copy it into a dense tensor.
    """
    return to_device(t, DEVICE)



# The fused op's defaults (docs/design.md).
W_D, W_C, TAU_D, TAU_C, MULT = 1.0, 0.5, 0.1, 0.1, 3.0

# float64 against the float64 oracle: both are exact formulas evaluated in double; the
# differences are a few ulps times the length of the sums (K <= 1000, B <= 257).
F64_TOL = dict(rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------
# The oracle: docs/design.md formulas on torch.distributions entropies, float64.
# --------------------------------------------------------------------------------------


oracle = distributions_oracle


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

Build = Callable[..., tuple]


def _identity_build(logits, log_std, coeff):
    return logits, log_std, coeff


def _leaf(t, dtype=None):
    """A fresh leaf copy of ``t`` (floating tensors require grad); others pass through."""
    if not isinstance(t, torch.Tensor):
        return t
    copy = t.detach().clone()
    if dtype is not None:
        copy = copy.to(dtype)
    return copy.requires_grad_(copy.is_floating_point())


def _grads(output: torch.Tensor, leaves: Sequence) -> list:
    """d output / d leaf for every tensor leaf; zeros where it does not depend on it."""
    tensors = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
    if not output.requires_grad:
        got = [None] * len(tensors)
    else:
        got = torch.autograd.grad(output, tensors, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, got)]


def _assert_grad_close(actual, expected, rtol, atol_rel, what):
    """|actual - expected| <= atol_rel * max|expected| + rtol * |expected|, elementwise.

    The absolute part is relative to the largest entry: gradients of a batch mean are
    O(1/(B*K)), so a fixed absolute tolerance would be meaningless for large inputs.
    """
    scale = expected.detach().double().abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(
        actual.double(),
        expected.double(),
        rtol=rtol,
        atol=atol_rel * scale + 1e-300,
        msg=lambda m: f"{what}: {m}",
    )


def compare_with(
    expected_fn,
    leaves: Sequence,
    build: Build = _identity_build,
    leaf_dtypes: Sequence = (None, None, None),
    expected_dtypes: Sequence = (torch.float64, torch.float64, torch.float64),
    rtol: float = F64_TOL["rtol"],
    atol: float = F64_TOL["atol"],
    grad_rtol: float = F64_TOL["rtol"],
    grad_atol_rel: float = 1e-10,
    op: Callable = hee.hybrid_entropy_loss,
    extra_outputs: Sequence[str] = (),
    **kwargs,
):
    """Checks the 7 outputs of ``op`` (by default the fused op; another variant's callable,
    which returns ``extra_outputs`` beside them), the gradient of each one separately and the
    gradient of a weighted sum of all of them, w.r.t. every tensor leaf, against
    ``expected_fn`` (the oracle or the reference).

    ``leaves`` are the raw (logits, log_std, coeff) leaves; ``build`` turns leaves into the
    op's arguments (so views, transposes and expansions are applied identically on both
    sides; on the fused side the leaves are moved to the test's device first, so the views
    are taken there). The fused side uses leaves of ``leaf_dtypes``, the expected side of
    ``expected_dtypes`` (None: keep).
    """
    op_leaves = [_leaf(t, d) for t, d in zip(leaves, leaf_dtypes)]
    expected_leaves = [_leaf(t.to(fused.dtype) if isinstance(t, torch.Tensor) else t, d)
                       for t, fused, d in zip(leaves, op_leaves, expected_dtypes)]

    got = run_on(DEVICE, op, *build(*[on_device(t) for t in op_leaves]), **kwargs)
    want = expected_fn(*build(*expected_leaves), **kwargs)

    assert set(got) == set(KEYS + extra_outputs)
    for key in KEYS:
        torch.testing.assert_close(
            got[key].double(), want[key].double().detach(), rtol=rtol, atol=atol,
            msg=lambda m, key=key: f"value of {key}: {m}",
        )
        assert torch.isfinite(got[key]).all(), key

    names = [n for n, t in zip(("logits", "log_std", "entropy_coeff"), op_leaves)
             if isinstance(t, torch.Tensor) and t.requires_grad]
    weighted_got = sum(w * got[k] for k, w in OUTPUT_WEIGHTS.items())
    weighted_want = sum(w * want[k] for k, w in OUTPUT_WEIGHTS.items())
    pairs = [(k, got[k], want[k]) for k in KEYS] + [("weighted sum", weighted_got, weighted_want)]
    for key, g_out, w_out in pairs:
        for name, leaf, g, w in zip(names, [t for t in op_leaves if isinstance(t, torch.Tensor)
                                            and t.requires_grad],
                                    _grads(g_out, op_leaves), _grads(w_out, expected_leaves)):
            assert g.dtype == leaf.dtype, f"d {key} / d {name}: dtype {g.dtype} != {leaf.dtype}"
            assert g.shape == leaf.shape
            assert torch.isfinite(g).all(), f"d {key} / d {name} not finite"
            _assert_grad_close(g, w, grad_rtol, grad_atol_rel, f"d {key} / d {name}")
    return got


def compare_with_oracle(leaves, build=_identity_build, **kwargs):
    return compare_with(oracle, leaves, build, **kwargs)


def grad_leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


# --------------------------------------------------------------------------------------
# Against torch.distributions, float64
# --------------------------------------------------------------------------------------

# (B, K, D): every B in {1, 3, 64, 257}, K in {1, 2, 7, 16, 17, 100, 1000}, D in {1, 8};
# one bigger size at most.
SHAPES = [
    (1, 1, 1),
    (1, 1000, 8),
    (3, 2, 8),
    (3, 17, 1),
    (64, 7, 8),
    (64, 16, 1),
    (64, 100, 8),
    (257, 1, 8),
    (257, 17, 1),
    (257, 1000, 8),
]


@pytest.mark.parametrize("b, k, d", SHAPES)
def test_outputs_and_gradients_match_distributions_oracle_float64(b, k, d):
    compare_with_oracle(make_sample(b, k, d))


# Both penalties active: every term of every output enters the gradients.
PENALTIES_ACTIVE = dict(min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0)


@pytest.mark.parametrize("hyper_parameters", [{}, PENALTIES_ACTIVE], ids=["defaults", "penalties-active"])
@pytest.mark.parametrize("b, k, d", [(1, 7, 8), (64, 17, 1), (257, 100, 8)])
@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_every_variant_matches_distributions_oracle_float64(variant, b, k, d, hyper_parameters):
    compare_with(variant.oracle, variant.sample_inputs(b, k, d), op=variant.op,
                 extra_outputs=variant.extra_outputs, **hyper_parameters)


@pytest.mark.parametrize(
    "thresholds",
    [(10.0, 10.0), (None, None), (10.0, None), (None, 10.0), (-10.0, -10.0)],
    ids=["both-active", "disabled", "discrete-only", "continuous-only", "inactive"],
)
def test_penalty_settings_match_distributions_oracle(thresholds):
    tau_d, tau_c = thresholds
    compare_with_oracle(
        make_sample(16, 7, 3),
        min_entropy_threshold=tau_d,
        continuous_min_entropy_threshold=tau_c,
        discrete_entropy_weight=1.7,
        continuous_entropy_weight=0.3,
        penalty_multiplier=2.5,
    )


@pytest.mark.parametrize("variant", variants_without_a_head(), ids=str)
def test_absent_head_gives_exactly_zero_entropy_loss_and_penalty(variant):
    # Thresholds far above any entropy: the absent head's penalty would be on if it counted.
    got = compare_with(variant.oracle, variant.sample_inputs(8, 5, 4), op=variant.op,
                       extra_outputs=variant.extra_outputs, **PENALTIES_ACTIVE)
    for head in variant.absent_heads:
        kind = "discrete" if head == "logits" else "continuous"
        for key in (kind + "_entropy", kind, kind + "_penalty"):
            assert got[key].item() == 0.0, key


# Every row layout of the float32 kernels: rows in SIMD lanes with the AVX-512 and AVX2
# tile transposes (K a power of two up to 32), the permute tiles (K = 3, 5, 6, 7 on AVX-512,
# K = 3 on AVX2) and neither (K = 12 on AVX-512; K = 5, 6, 7 on AVX2), and rows along the lanes (K = 33;
# the backward from K = 9 on AVX-512, K = 8 on AVX2). B = 35 is full tiles and a partial
# one, for either vector width (16 rows a tile on AVX-512, 8 on AVX2).
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 32, 33])
def test_float32_kernels_match_distributions_oracle_at_every_tile_width(k):
    torch.manual_seed(k)
    compare_with_oracle(
        make_sample(35, k, 2),
        leaf_dtypes=(torch.float32, torch.float32, torch.float32),
        rtol=1e-5, atol=1e-6, grad_rtol=1e-5, grad_atol_rel=1e-5,
        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0,
    )


# --------------------------------------------------------------------------------------
# Against the project's reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("thresholds", [(10.0, 10.0), (None, None), (0.0, 10.0)],
                         ids=["both penalties on", "no penalties", "one penalty on"])
@pytest.mark.parametrize("heads", [("logits", "log_std"), ("logits",), ("log_std",)], ids=str)
def test_the_reference_matches_the_distributions_oracle_in_float64(heads, thresholds):
    # The reference's entropies are its own tensor ops; its loss terms are the library's
    # (ops/loss_terms.py), which this holds to the oracle's separate writing.
    compare_with(distributions_oracle, make_sample(33, 7, 3, heads=heads, coeff=(0.05, 0.02)),
                 op=hee.reference.hybrid_entropy_loss, min_entropy_threshold=thresholds[0],
                 continuous_min_entropy_threshold=thresholds[1])


@pytest.mark.parametrize("b, k, d", [(1, 1, 1), (3, 17, 8), (64, 100, 1), (257, 1000, 8)])
def test_matches_reference_float64(b, k, d):
    compare_with(hee.reference.hybrid_entropy_loss, make_sample(b, k, d),
                 min_entropy_threshold=10.0, continuous_min_entropy_threshold=-10.0)


@pytest.mark.parametrize("b, k, d", [(1, 1, 1), (3, 17, 8), (64, 100, 1), (257, 1000, 8)])
def test_matches_reference_float32(b, k, d):
    # Both sides accumulate in float32 (unit roundoff 6e-8) but in different orders (SIMD
    # lanes and per-row partial sums vs. ATen's reductions). Row entropies are sums of up to
    # K = 1000 terms and the batch mean a sum of B = 257 rows; with blocked/pairwise
    # summation the rounding error stays around 1e-7..1e-6 relative, so rtol 1e-5 leaves
    # headroom while still catching any formula error (which would be O(1e-2) or more).
    # atol 1e-6 covers outputs that are near zero through cancellation (e.g. total).
    # Gradients -p (log p + h) / B cancel when log p ~ -h: the absolute error is a few
    # ulps of the largest entry, hence an absolute tolerance relative to it.
    compare_with(
        hee.reference.hybrid_entropy_loss,
        make_sample(b, k, d, dtype=torch.float32),
        expected_dtypes=(None, None, None),
        rtol=1e-5, atol=1e-6, grad_rtol=1e-5, grad_atol_rel=1e-5,
        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0,
    )


@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_every_variant_matches_reference_float32(variant):
    # The tolerances of test_matches_reference_float32.
    compare_with(
        variant.reference,
        variant.sample_inputs(64, 17, 8, torch.float32),
        expected_dtypes=(None, None, None),
        rtol=1e-5, atol=1e-6, grad_rtol=1e-5, grad_atol_rel=1e-5,
        op=variant.op, extra_outputs=variant.extra_outputs, **PENALTIES_ACTIVE,
    )


# --------------------------------------------------------------------------------------
# gradcheck (float64)
# --------------------------------------------------------------------------------------


def _all_outputs(**kwargs):
    def f(logits, log_std, coeff):
        out = fused_loss(logits, log_std, coeff, **kwargs)
        return tuple(out[k] for k in KEYS)

    return f


# Thresholds below the entropies (>= 0, as the regularizer's config requires): both
# penalties inactive.
PENALTIES_INACTIVE = dict(min_entropy_threshold=0.0, continuous_min_entropy_threshold=0.0)


@pytest.mark.parametrize("hyper_parameters", [PENALTIES_ACTIVE, PENALTIES_INACTIVE],
                         ids=["penalties-active", "penalties-inactive"])
@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_gradcheck_all_outputs(variant, hyper_parameters):
    sample = variant.sample_inputs(3, 5, 2, requires_grad=True)

    def f(*leaves):
        # The sample with its leaves (the tensors that require grad) replaced by gradcheck's.
        given = iter(leaves)
        args = [next(given) if isinstance(a, torch.Tensor) and a.requires_grad else a for a in sample]
        out = run_on(DEVICE, variant.op, *args, **hyper_parameters)
        return tuple(out[k] for k in KEYS)

    assert torch.autograd.gradcheck(f, tuple(sample.leaves()))


# --------------------------------------------------------------------------------------
# Edge inputs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_action_has_exactly_zero_entropy_and_gradient(dtype):
    logits = torch.randn(5, 1, dtype=dtype, requires_grad=True)
    out = fused_loss(logits, None, 0.7, min_entropy_threshold=1.0)
    assert out["discrete_entropy"].item() == 0.0
    assert out["discrete"].item() == 0.0
    # H_d = 0 < 1.0: the penalty is active, yet its gradient is dH_d/dz = 0.
    assert out["discrete_penalty"].item() == pytest.approx(MULT * 1.0, rel=1e-7)
    (grad,) = torch.autograd.grad(out["total"], logits)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_batch_of_one_matches_oracle():
    compare_with_oracle(make_sample(1, 6, 2), min_entropy_threshold=10.0,
                        continuous_min_entropy_threshold=10.0)


def test_transposed_logits_match_oracle():
    base = 2.0 * torch.randn(9, 6, dtype=torch.float64)  # [K, B]
    _, log_std, coeff = make_sample(6, 9, 3)

    def build(z, s, c):
        assert not z.t().is_contiguous()
        return z.t(), s, c

    compare_with_oracle((base, log_std, coeff), build, min_entropy_threshold=10.0)


def test_column_sliced_logits_match_oracle():
    base = 2.0 * torch.randn(6, 34, dtype=torch.float64)
    _, log_std, coeff = make_sample(6, 17, 3)
    compare_with_oracle((base, log_std, coeff), lambda z, s, c: (z[:, ::2], s, c),
                        min_entropy_threshold=10.0)


def test_row_sliced_logits_and_log_std_match_oracle():
    base = 2.0 * torch.randn(12, 17, dtype=torch.float64)
    log_std_base = 0.5 * torch.randn(12, 5, dtype=torch.float64)
    coeff = torch.tensor(0.05, dtype=torch.float64)
    compare_with_oracle((base, log_std_base, coeff),
                        lambda z, s, c: (z[1::3], s[2::3, 1:4], c),
                        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0)


def test_expanded_logits_match_oracle():
    base = 2.0 * torch.randn(3, 7, dtype=torch.float64)
    _, log_std, coeff = make_sample(10, 7, 2)
    compare_with_oracle((base, log_std, coeff), lambda z, s, c: (z[:1].expand(10, 7), s, c),
                        min_entropy_threshold=10.0)


@pytest.mark.parametrize("source_shape", [(4,), (1, 4)], ids=["from-1d", "from-row"])
def test_expanded_log_std_matches_oracle(source_shape):
    logits, _, coeff = make_sample(6, 5, 4)
    log_std = 0.5 * torch.randn(source_shape, dtype=torch.float64)
    compare_with_oracle((logits, log_std, coeff), lambda z, s, c: (z, s.expand(6, 4), c),
                        continuous_min_entropy_threshold=10.0)


# --------------------------------------------------------------------------------------
# Masked (-inf) logits
# --------------------------------------------------------------------------------------


def _masked_logits(dtype):
    logits = 2.0 * torch.randn(6, 9, dtype=torch.float64)
    mask = torch.zeros(6, 9, dtype=torch.bool)
    mask[0, [1, 4]] = True
    mask[2, :8] = True  # one allowed action left: entropy 0
    mask[3, ::2] = True
    mask[5, 0] = True
    # rows 1 and 4 unmasked
    return logits.masked_fill(mask, float("-inf")).to(dtype), mask


def _subset_entropy_oracle(logits64, mask):
    """Mean over rows of Categorical entropy of each row's unmasked entries."""
    rows = [Categorical(logits=logits64[i][~mask[i]]).entropy() for i in range(logits64.shape[0])]
    return torch.stack(rows).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masked_logits_give_entropy_of_unmasked_subset(dtype):
    logits, mask = _masked_logits(dtype)
    out = fused_loss(logits, None, 0.2, min_entropy_threshold=None)
    expected = _subset_entropy_oracle(logits.double(), mask)
    tol = F64_TOL if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for key in KEYS:
        assert torch.isfinite(out[key]), key
    torch.testing.assert_close(out["discrete_entropy"].double(), expected, **tol)
    torch.testing.assert_close(out["discrete"].double(), -0.2 * expected, **tol)


def _masked_long_rows(dtype):
    # K = 37: rows along the lanes, with 5 columns past the last full vector of
    # either width (the forward pads that tail with masked lanes on AVX-512).
    logits = 2.0 * torch.randn(5, 37, dtype=torch.float64)
    mask = torch.zeros(5, 37, dtype=torch.bool)
    mask[0, 32:] = True  # the whole tail masked
    mask[1, :36] = True  # one allowed action left, in the tail: entropy 0
    mask[2, 3:35:3] = True  # masks in the vectors and the tail
    mask[4, 33] = True
    # row 3 unmasked
    return logits.masked_fill(mask, float("-inf")).to(dtype), mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masked_logits_in_long_rows_give_entropy_and_gradient_of_unmasked_subset(dtype):
    logits, mask = _masked_long_rows(dtype)
    logits.requires_grad_(True)
    out = fused_loss(logits, None, 0.2, min_entropy_threshold=None)
    leaf = logits.detach().double().requires_grad_(True)
    expected = _subset_entropy_oracle(leaf, mask)
    (got_grad,) = torch.autograd.grad(out["discrete_entropy"], logits)
    (want_grad,) = torch.autograd.grad(expected, leaf)
    tol = F64_TOL if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["discrete_entropy"].double(), expected.detach(), **tol)
    assert (got_grad[mask] == 0).all()
    grad_tol = {  # a bfloat16 gradient is itself rounded to 8 bits
        torch.float64: F64_TOL,
        torch.float32: dict(rtol=1e-4, atol=1e-6),
        torch.bfloat16: dict(rtol=1e-2, atol=1e-4),
    }[dtype]
    torch.testing.assert_close(got_grad.double(), want_grad, **grad_tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masked_logits_get_zero_gradient(dtype):
    logits, mask = _masked_logits(dtype)
    logits.requires_grad_(True)
    log_std = torch.zeros(6, 2, dtype=dtype, requires_grad=True)
    # Penalties active, so every output carries a nonzero logits gradient.
    out = fused_loss(logits, log_std, 0.2, min_entropy_threshold=10.0,
                     continuous_min_entropy_threshold=10.0)
    for key in KEYS + ("weighted sum",):
        output = (sum(w * out[k] for k, w in OUTPUT_WEIGHTS.items())
                  if key == "weighted sum" else out[key])
        grad_z, grad_s = _grads(output, (logits, log_std))
        assert not torch.isnan(grad_z).any() and not torch.isnan(grad_s).any(), key
        assert torch.isfinite(grad_z).all(), key
        assert (grad_z[mask] == 0).all(), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make_logits", [_masked_logits, _masked_long_rows], ids=["K=9", "K=37"])
def test_masked_logits_get_zero_gradient_at_a_huge_gradient_scale(dtype, make_logits):
    # d total / d h_d = -c / B = -2e29 here: a masked action's log p is clamped to a
    # finite floor, and that floor times the scale must not overflow to inf (0 * inf
    # is NaN).
    logits, mask = make_logits(dtype)
    logits.requires_grad_(True)
    out = fused_loss(logits, None, 1e30, min_entropy_threshold=None)
    (grad_z,) = torch.autograd.grad(out["total"], logits)
    assert torch.isfinite(grad_z).all()
    assert (grad_z[mask] == 0).all()
    assert (grad_z[~mask] != 0).any()


def test_masked_logits_gradient_matches_subset_oracle():
    logits, mask = _masked_logits(torch.float64)
    logits.requires_grad_(True)
    out = fused_loss(logits, None, 0.2, min_entropy_threshold=10.0)
    leaf = logits.detach().clone().requires_grad_(True)
    h = _subset_entropy_oracle(leaf, mask)
    want = -0.2 * h + MULT * (10.0 - h)
    (got_grad,) = torch.autograd.grad(out["total"], logits)
    (want_grad,) = torch.autograd.grad(want, leaf)
    torch.testing.assert_close(out["total"], want.detach(), **F64_TOL)
    _assert_grad_close(got_grad, want_grad, 1e-10, 1e-10, "d total / d logits")
    assert (got_grad[mask] == 0).all()


def test_gradcheck_with_masked_logits():
    logits, mask = _masked_logits(torch.float64)
    logits, log_std, coeff = grad_leaves(logits, 0.3 * torch.randn(6, 2, dtype=torch.float64),
                                          torch.tensor(0.1, dtype=torch.float64))
    f = _all_outputs(min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0)
    assert torch.autograd.gradcheck(f, (logits, log_std, coeff))


# --------------------------------------------------------------------------------------
# Rows with every action masked: a policy with no choice
# --------------------------------------------------------------------------------------

# Row widths on every kernel path: rows in lanes (K <= 32, with and without a register
# transpose), rows along the lanes with and without a partial last vector.
FULLY_MASKED_WIDTHS = [1, 3, 9, 16, 37, 64, 100]


def _with_fully_masked_rows(k, dtype, b=7, rows=(0, 3, 6)):
    logits = 2.0 * torch.randn(b, k, dtype=torch.float64)
    if k > 2:
        logits[1, 1] = -math.inf  # a partly masked row beside them
    logits[list(rows)] = -math.inf
    return logits.to(dtype), torch.tensor([i in rows for i in range(b)])


@pytest.mark.parametrize("k", FULLY_MASKED_WIDTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_fully_masked_rows_add_zero_entropy_to_the_batch_mean(dtype, k):
    logits, masked_rows = _with_fully_masked_rows(k, dtype)
    out = fused_loss(logits, None, 0.2, min_entropy_threshold=None)
    unmasked = logits[~masked_rows].double()
    # Mean over all B rows, the masked ones counting 0.
    expected = Categorical(logits=torch.where(torch.isneginf(unmasked), -1e300, unmasked)).entropy().sum()
    expected = expected / logits.shape[0]
    tol = F64_TOL if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for key in KEYS:
        assert torch.isfinite(out[key]), key
    torch.testing.assert_close(out["discrete_entropy"].double(), expected, **tol)


@pytest.mark.parametrize("k", FULLY_MASKED_WIDTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_fully_masked_rows_get_zero_gradient_and_leave_the_others_finite(dtype, k):
    logits, masked_rows = _with_fully_masked_rows(k, dtype)
    logits.requires_grad_(True)
    log_std = torch.zeros(logits.shape[0], 2, dtype=dtype, requires_grad=True)
    out = fused_loss(logits, log_std, 0.2, min_entropy_threshold=10.0,
                     continuous_min_entropy_threshold=10.0)
    for key in KEYS:
        grad_z, grad_s = _grads(out[key], (logits, log_std))
        assert torch.isfinite(grad_z).all() and torch.isfinite(grad_s).all(), key
        assert (grad_z[masked_rows] == 0).all(), key


@pytest.mark.parametrize("k", [3, 37])
def test_fully_masked_rows_match_oracle_values_and_gradients(k):
    logits, _ = _with_fully_masked_rows(k, torch.float64)
    log_std = 0.3 * torch.randn(logits.shape[0], 2, dtype=torch.float64)
    compare_with_oracle((logits, log_std, torch.tensor(0.1, dtype=torch.float64)),
                        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0)


@pytest.mark.parametrize("k", [1, 4, 40])
def test_every_row_masked_gives_zero_entropy_and_zero_gradient(k):
    logits = torch.full((5, k), -math.inf, requires_grad=True)
    out = fused_loss(logits, None, 0.2, min_entropy_threshold=0.5)
    assert out["discrete_entropy"].item() == 0.0
    assert out["discrete_penalty"].item() == pytest.approx(3.0 * 0.5)
    (grad,) = torch.autograd.grad(out["total"], logits)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("k", [4, 40])
def test_nan_logit_in_an_otherwise_masked_row_still_gives_nan(k):
    logits = torch.full((3, k), -math.inf)
    logits[1, k - 1] = math.nan
    out = fused_loss(logits, None, 0.2, min_entropy_threshold=None)
    assert torch.isnan(out["discrete_entropy"])


def test_reference_gives_fully_masked_rows_zero_entropy_and_zero_gradient():
    logits, masked_rows = _with_fully_masked_rows(9, torch.float64)
    logits.requires_grad_(True)
    fused = fused_loss(logits, None, 0.2, min_entropy_threshold=10.0)
    ref = hee.reference.hybrid_entropy_loss(logits, None, 0.2, min_entropy_threshold=10.0)
    torch.testing.assert_close(ref["discrete_entropy"], fused["discrete_entropy"], **F64_TOL)
    (grad,) = torch.autograd.grad(ref["total"], logits)
    assert torch.isfinite(grad).all()
    assert (grad[masked_rows] == 0).all()


# --------------------------------------------------------------------------------------
# Huge logits
# --------------------------------------------------------------------------------------


def _huge_logits():
    spread = 1e4 * torch.randn(4, 11, dtype=torch.float64)  # nearly one-hot rows
    plus = 1e4 + torch.randn(3, 11, dtype=torch.float64)  # huge offset, O(1) spread
    minus = -1e4 + torch.randn(3, 11, dtype=torch.float64)
    tied = torch.full((2, 11), -1e4, dtype=torch.float64)
    tied[:, :2] = 1e4  # two tied winners: entropy log 2
    mixed = torch.tensor([[1e4, -1e4] * 5 + [0.0]], dtype=torch.float64)
    return torch.cat([spread, plus, minus, tied, mixed])


def test_huge_logits_float64_match_oracle():
    logits = _huge_logits()
    log_std = torch.zeros(logits.shape[0], 2, dtype=torch.float64)
    compare_with_oracle((logits, log_std, torch.tensor(0.1, dtype=torch.float64)),
                        min_entropy_threshold=10.0)


def test_huge_logits_float32_match_float64_oracle():
    # The oracle sees the same float32-rounded logits in float64 (log_softmax is stable
    # there). The fused op subtracts the row max (exact for nearby float32 values) and
    # accumulates in float32, so the float32 tolerances of the reference comparison apply.
    logits = _huge_logits().float()
    log_std = torch.zeros(logits.shape[0], 2)
    got = compare_with_oracle((logits, log_std, torch.tensor(0.1)),
                              leaf_dtypes=(None, None, None),
                              rtol=1e-5, atol=1e-6, grad_rtol=1e-5, grad_atol_rel=1e-5,
                              min_entropy_threshold=10.0)
    assert got["discrete_entropy"].dtype == torch.float32


def test_tied_huge_logits_give_log_two():
    logits = torch.tensor([[1e4, 1e4, -1e4, -1e4]], dtype=torch.float64)
    out = fused_loss(logits, None, 1.0)
    assert out["discrete_entropy"].item() == pytest.approx(math.log(2.0), rel=1e-12)


# --------------------------------------------------------------------------------------
# Penalties
# --------------------------------------------------------------------------------------


def _uniform(b, k, dtype=torch.float64):
    """Uniform logits: H_d = log K."""
    return torch.full((b, k), 0.37, dtype=dtype, requires_grad=True)


def _constant_log_std(b, d, c, dtype=torch.float64):
    """Constant log-std c: H_c = D * (0.5 log(2 pi e) + c)."""
    return torch.full((b, d), c, dtype=dtype, requires_grad=True)


def test_discrete_penalty_is_multiplier_times_gap_below_threshold():
    logits = _uniform(5, 6)
    h = math.log(6)
    out = fused_loss(logits, None, 0.1, min_entropy_threshold=h + 0.25,
                     penalty_multiplier=4.0)
    assert out["discrete_penalty"].item() == pytest.approx(4.0 * 0.25, rel=1e-10)
    assert out["discrete_entropy"].item() == pytest.approx(h, rel=1e-12)


def test_continuous_penalty_is_multiplier_times_gap_below_threshold():
    log_std = _constant_log_std(4, 3, -1.2)
    h = 3 * (HALF_LOG_2PI_E - 1.2)
    out = fused_loss(None, log_std, 0.1, continuous_min_entropy_threshold=h + 0.5,
                     penalty_multiplier=2.0)
    assert out["continuous_entropy"].item() == pytest.approx(h, rel=1e-12)
    assert out["continuous_penalty"].item() == pytest.approx(2.0 * 0.5, rel=1e-10)


def test_total_adds_both_penalties_to_the_weighted_entropy_terms():
    logits, log_std = _uniform(4, 8), _constant_log_std(4, 2, -2.0)
    h_d, h_c = math.log(8), 2 * (HALF_LOG_2PI_E - 2.0)
    out = fused_loss(logits, log_std, 0.05, 2.0, 0.25, h_d + 1.0, h_c + 0.5, 3.0)
    expected = -0.05 * 2.0 * h_d - 0.05 * 0.25 * h_c + 3.0 * 1.0 + 3.0 * 0.5
    assert out["total"].item() == pytest.approx(expected, rel=1e-10)


def test_penalty_is_exactly_zero_at_threshold():
    # The threshold is set to the entropy the op itself reports (float64 outputs, so
    # the reported value is the one compared): "strictly zero unless H < tau" must then
    # give exactly 0 with a zero gradient, however the entropy was rounded. (For float32
    # outputs the op may compare a more precise internal entropy than the reported
    # float32 one, so exact equality is only meaningful here and for K = 1 below.)
    logits = (2.0 * torch.randn(7, 5, dtype=torch.float64)).requires_grad_(True)
    log_std = (0.3 * torch.randn(7, 3, dtype=torch.float64)).requires_grad_(True)
    first = fused_loss(logits, log_std, 0.1)
    tau_d, tau_c = first["discrete_entropy"].item(), first["continuous_entropy"].item()
    out = fused_loss(logits, log_std, 0.1, min_entropy_threshold=tau_d,
                     continuous_min_entropy_threshold=tau_c)
    assert out["discrete_penalty"].item() == 0.0
    assert out["continuous_penalty"].item() == 0.0
    for key in ("discrete_penalty", "continuous_penalty"):
        for g in _grads(out[key], (logits, log_std)):
            assert torch.equal(g, torch.zeros_like(g)), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_single_action_penalty_is_exactly_zero_at_zero_threshold(dtype):
    # K = 1: p = 1 and H_d = 0 exactly in any precision.
    logits = torch.randn(3, 1).to(dtype).requires_grad_(True)
    at = fused_loss(logits, None, 0.1, min_entropy_threshold=0.0)
    assert at["discrete_penalty"].item() == 0.0
    (grad,) = torch.autograd.grad(at["discrete_penalty"], logits)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_single_action_penalty_is_active_just_above_zero_threshold():
    logits = torch.randn(3, 1, dtype=torch.float64)
    above = fused_loss(logits, None, 0.1, min_entropy_threshold=1e-300)
    assert above["discrete_penalty"].item() == pytest.approx(MULT * 1e-300, rel=1e-12)


def test_penalty_switches_on_one_ulp_below_threshold():
    logits = (2.0 * torch.randn(7, 5, dtype=torch.float64)).requires_grad_(True)
    log_std = (0.3 * torch.randn(7, 3, dtype=torch.float64)).requires_grad_(True)
    first = fused_loss(logits, log_std, 0.1)
    h_d, h_c = first["discrete_entropy"].item(), first["continuous_entropy"].item()
    tau_d, tau_c = math.nextafter(h_d, math.inf), math.nextafter(h_c, math.inf)
    out = fused_loss(logits, log_std, 0.1, min_entropy_threshold=tau_d,
                     continuous_min_entropy_threshold=tau_c)
    assert out["discrete_penalty"].item() == pytest.approx(MULT * (tau_d - h_d), rel=1e-6)
    assert out["continuous_penalty"].item() == pytest.approx(MULT * (tau_c - h_c), rel=1e-6)
    # Active: its gradient is -m * dH/dinput.
    (g_pen,) = torch.autograd.grad(out["discrete_penalty"], logits, retain_graph=True)
    (g_ent,) = torch.autograd.grad(out["discrete_entropy"], logits, retain_graph=True)
    torch.testing.assert_close(g_pen, -MULT * g_ent, **F64_TOL)
    (g_pen_c,) = torch.autograd.grad(out["continuous_penalty"], log_std)
    torch.testing.assert_close(g_pen_c, torch.full_like(g_pen_c, -MULT / 7), **F64_TOL)


def test_penalty_is_zero_above_threshold():
    logits, log_std = _uniform(4, 6), _constant_log_std(4, 2, 0.0)
    out = fused_loss(logits, log_std, 0.1, min_entropy_threshold=math.log(6) - 0.01,
                     continuous_min_entropy_threshold=2 * HALF_LOG_2PI_E - 0.01)
    assert out["discrete_penalty"].item() == 0.0
    assert out["continuous_penalty"].item() == 0.0


def test_inactive_penalty_has_zero_gradient():
    logits = (2.0 * torch.randn(5, 6, dtype=torch.float64)).requires_grad_(True)
    log_std = (0.3 * torch.randn(5, 2, dtype=torch.float64)).requires_grad_(True)
    coeff = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    out = fused_loss(logits, log_std, coeff, min_entropy_threshold=-1.0,
                     continuous_min_entropy_threshold=-10.0)
    for key in ("discrete_penalty", "continuous_penalty"):
        assert out[key].item() == 0.0
        for g in _grads(out[key], (logits, log_std, coeff)):
            assert torch.equal(g, torch.zeros_like(g)), key


def test_none_thresholds_disable_both_penalties():
    logits, log_std = _uniform(4, 3), _constant_log_std(4, 2, -5.0)  # H_c < 0
    out = fused_loss(logits, log_std, 0.1, min_entropy_threshold=None,
                     continuous_min_entropy_threshold=None)
    assert out["discrete_penalty"].item() == 0.0
    assert out["continuous_penalty"].item() == 0.0
    assert out["total"].item() == pytest.approx(
        out["discrete"].item() + out["continuous"].item(), rel=1e-12)
    for key in ("discrete_penalty", "continuous_penalty"):
        for g in _grads(out[key], (logits, log_std)):
            assert torch.equal(g, torch.zeros_like(g)), key


def test_discrete_threshold_alone_drives_only_discrete_penalty():
    logits, log_std = _uniform(4, 3), _constant_log_std(4, 2, -5.0)
    h_d = math.log(3)
    out = fused_loss(logits, log_std, 0.1, min_entropy_threshold=h_d + 1.0,
                     continuous_min_entropy_threshold=None)
    assert out["discrete_penalty"].item() == pytest.approx(MULT * 1.0, rel=1e-10)
    assert out["continuous_penalty"].item() == 0.0


def test_continuous_threshold_alone_drives_only_continuous_penalty():
    logits, log_std = _uniform(4, 3), _constant_log_std(4, 2, -5.0)
    h_c = 2 * (HALF_LOG_2PI_E - 5.0)
    out = fused_loss(logits, log_std, 0.1, min_entropy_threshold=None,
                     continuous_min_entropy_threshold=0.0)
    assert out["discrete_penalty"].item() == 0.0
    assert out["continuous_penalty"].item() == pytest.approx(MULT * (0.0 - h_c), rel=1e-10)


def test_separate_thresholds_are_applied_to_their_own_head():
    logits, log_std = _uniform(4, 3), _constant_log_std(4, 2, 0.0)
    h_d, h_c = math.log(3), 2 * HALF_LOG_2PI_E  # ~1.10, ~2.84
    # tau_d between the two entropies: active for neither if swapped between heads.
    out = fused_loss(logits, log_std, 0.1, min_entropy_threshold=2.0,
                     continuous_min_entropy_threshold=3.0)
    assert out["discrete_penalty"].item() == pytest.approx(MULT * (2.0 - h_d), rel=1e-10)
    assert out["continuous_penalty"].item() == pytest.approx(MULT * (3.0 - h_c), rel=1e-10)


def test_missing_discrete_head_has_zero_penalty_with_threshold_set():
    log_std = _constant_log_std(4, 2, 0.0)
    out = fused_loss(None, log_std, 0.1, min_entropy_threshold=100.0,
                     continuous_min_entropy_threshold=None)
    assert out["discrete_penalty"].item() == 0.0
    assert out["total"].item() == pytest.approx(-0.1 * W_C * 2 * HALF_LOG_2PI_E, rel=1e-10)


def test_missing_continuous_head_has_zero_penalty_with_threshold_set():
    logits = _uniform(4, 3)
    out = fused_loss(logits, None, 0.1, min_entropy_threshold=None,
                     continuous_min_entropy_threshold=100.0)
    assert out["continuous_penalty"].item() == 0.0
    assert out["total"].item() == pytest.approx(-0.1 * W_D * math.log(3), rel=1e-10)


# --------------------------------------------------------------------------------------
# entropy_coeff
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "coeff, value",
    [(0.25, 0.25), (2, 2.0), (torch.tensor(0.25), 0.25),
     (torch.tensor(0.25, dtype=torch.float64), 0.25)],
    ids=["float", "int", "tensor-f32", "tensor-f64"],
)
def test_entropy_coeff_types_scale_the_entropy_terms(coeff, value):
    logits, log_std = _uniform(4, 5), _constant_log_std(4, 3, -0.5)
    h_d, h_c = math.log(5), 3 * (HALF_LOG_2PI_E - 0.5)
    out = fused_loss(logits, log_std, coeff, 1.5, 0.5, None, None, 3.0)
    assert out["discrete"].item() == pytest.approx(-value * 1.5 * h_d, rel=1e-10)
    assert out["continuous"].item() == pytest.approx(-value * 0.5 * h_c, rel=1e-10)
    assert out["total"].dtype == torch.float64


@pytest.mark.parametrize("coeff_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.float64])
def test_coeff_gradient_is_minus_weighted_entropy(coeff_dtype, input_dtype):
    logits = (2.0 * torch.randn(6, 4)).to(input_dtype)
    log_std = (0.3 * torch.randn(6, 3)).to(input_dtype)
    coeff = torch.tensor(0.05, dtype=coeff_dtype, requires_grad=True)
    out = fused_loss(logits, log_std, coeff, 1.3, 0.7, 10.0, 10.0, 3.0)
    h = oracle(logits, log_std, 0.05)
    expected = -(1.3 * h["discrete_entropy"] + 0.7 * h["continuous_entropy"])
    (grad,) = torch.autograd.grad(out["total"], coeff)
    assert grad.dtype == coeff_dtype
    tol = F64_TOL if (coeff_dtype, input_dtype) == (torch.float64,) * 2 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected, **tol)


def test_coeff_tensor_gradient_matches_oracle_for_every_output():
    # float64 heads with a float32 coefficient: the coefficient's gradient is computed in
    # float64 and rounded to float32 (its dtype), hence grad_rtol 1e-6 (u32 = 6e-8).
    logits, log_std, _ = make_sample(5, 4, 2)
    compare_with_oracle((logits, log_std, torch.tensor(0.3, dtype=torch.float32)),
                        leaf_dtypes=(None, None, None), expected_dtypes=(None, None, torch.float64),
                        grad_rtol=1e-6,
                        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0)


def test_per_head_coefficients_scale_each_head_by_its_own_value():
    logits, log_std = _uniform(4, 5), _constant_log_std(4, 3, -0.5)
    h_d, h_c = math.log(5), 3 * (HALF_LOG_2PI_E - 0.5)
    coeff = torch.tensor([0.25, 0.125], dtype=torch.float64)
    out = fused_loss(logits, log_std, coeff, 1.5, 0.5, None, None, 3.0)
    assert out["discrete"].item() == pytest.approx(-0.25 * 1.5 * h_d, rel=1e-10)
    assert out["continuous"].item() == pytest.approx(-0.125 * 0.5 * h_c, rel=1e-10)


def test_per_head_coefficient_gradient_has_one_entry_per_head():
    logits = 2.0 * torch.randn(6, 4, dtype=torch.float64)
    log_std = 0.3 * torch.randn(6, 3, dtype=torch.float64)
    coeff = torch.tensor([0.05, 0.02], dtype=torch.float64, requires_grad=True)
    out = fused_loss(logits, log_std, coeff, 1.3, 0.7, 10.0, 10.0, 3.0)
    h = oracle(logits, log_std, 0.05)
    (grad,) = torch.autograd.grad(out["total"], coeff)
    expected = torch.stack([-1.3 * h["discrete_entropy"], -0.7 * h["continuous_entropy"]])
    assert grad.shape == (2,)
    torch.testing.assert_close(grad, expected, **F64_TOL)


def test_per_head_coefficients_match_oracle_for_every_output():
    logits, log_std, _ = make_sample(5, 4, 2)
    compare_with_oracle((logits, log_std, torch.tensor([0.3, 0.7], dtype=torch.float64)),
                        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0)


def test_equal_per_head_coefficients_give_the_single_coefficient_result():
    logits, log_std, _ = make_sample(9, 6, 2)
    both = fused_loss(logits, log_std, torch.tensor(0.3, dtype=torch.float64))
    each = fused_loss(logits, log_std, torch.tensor([0.3, 0.3], dtype=torch.float64))
    for key in KEYS:
        assert torch.equal(both[key], each[key]), key


# --------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_float32_outputs_and_half_gradients(dtype):
    logits, log_std, _ = make_sample(17, 7, 3, dtype=torch.float32)
    u = UNIT_ROUNDOFF[dtype]
    # Outputs: the rounded 16-bit inputs are exact in float64, and the op accumulates in
    # float32, so float32 tolerances apply. Gradients: computed in float32, then rounded
    # to the 16-bit input dtype, which costs up to u relative per entry (2u leaves room
    # for the float32 error before rounding); entries far below the largest one lose
    # relative precision to the 16-bit spacing, hence an absolute part of u * max|g|.
    got = compare_with_oracle(
        (logits.to(dtype), log_std.to(dtype), 0.1),
        leaf_dtypes=(None, None, None),
        rtol=1e-5, atol=1e-6, grad_rtol=2 * u, grad_atol_rel=u,
        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0,
    )
    for key in KEYS:
        assert got[key].dtype == torch.float32, key


# The 16-bit kernels convert whole vectors on AVX2 and AVX-512: full tiles of rows in lanes
# (K = 3, 4, 8, 12, 16; the backward's tiles up to K = 8 on AVX-512, 7 on AVX2), rows along
# the lanes with whole vectors and a tail (K = 33, 64, 100), and B = 35 leaves a partial tile
# that goes element by element.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [3, 4, 8, 12, 16, 33, 64, 100])
def test_half_precision_kernels_match_distributions_oracle_at_every_tile_width(dtype, k):
    torch.manual_seed(k)
    logits, log_std, _ = make_sample(35, k, 3, dtype=torch.float32)
    u = UNIT_ROUNDOFF[dtype]
    compare_with_oracle(
        (logits.to(dtype), log_std.to(dtype), 0.1),
        leaf_dtypes=(None, None, None),
        rtol=1e-5, atol=1e-6, grad_rtol=2 * u, grad_atol_rel=u,
        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_half_precision_gradients_have_their_inputs_dtype(variant, dtype):
    sample = variant.sample_inputs(4, 5, 2, dtype, requires_grad=True)  # a float32 coefficient
    run_on(DEVICE, variant.op, *sample)["total"].backward()
    for leaf in sample.leaves():
        assert leaf.grad.dtype == leaf.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_outputs_have_the_heads_dtype_whatever_the_coefficients(variant, dtype):
    # A float64 coefficient (what a Python float becomes) does not promote float32 outputs.
    out = run_on(DEVICE, variant.op, *variant.sample_inputs(3, 4, 2, dtype, coeff_dtype=torch.float64))
    for key in variant.output_keys:
        assert out[key].dtype == dtype, key


@pytest.mark.parametrize(
    "logits_dtype, log_std_dtype, out_dtype",
    [
        (torch.float32, torch.float64, torch.float64),
        (torch.float64, torch.float32, torch.float64),
        (torch.bfloat16, torch.float32, torch.float32),
        (torch.float16, torch.float64, torch.float64),
    ],
)
def test_mixed_dtypes_promote_outputs_and_keep_gradient_dtypes(logits_dtype, log_std_dtype,
                                                               out_dtype):
    logits, log_std, _ = make_sample(9, 6, 3, dtype=torch.float32)
    half = [d for d in (logits_dtype, log_std_dtype) if d in HALF_DTYPES]
    u = UNIT_ROUNDOFF[half[0]] if half else 0.0
    # Values: the float32/16-bit head is accumulated in float32 (see the float32 tests).
    got = compare_with_oracle(
        (logits.to(logits_dtype), log_std.to(log_std_dtype), 0.1),
        leaf_dtypes=(None, None, None),
        rtol=1e-5, atol=1e-6, grad_rtol=2 * u + 1e-5, grad_atol_rel=u + 1e-5,
        min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0,
    )
    for key in KEYS:
        assert got[key].dtype == out_dtype, key


# --------------------------------------------------------------------------------------
# Keys, partial backward
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_returns_exactly_the_seven_design_keys_and_its_own_as_0_dim_tensors(variant):
    # Seven keys for the op, with one head missing too; the regularizer adds its coefficient.
    out = run_on(DEVICE, variant.op, *variant.sample_inputs(3, 4, 2, torch.float32))
    assert set(out) == set(KEYS + variant.extra_outputs)
    assert len(out) == 7 + len(variant.extra_outputs)
    for key in out:
        assert isinstance(out[key], torch.Tensor)
        assert out[key].dim() == 0, key


def _grad_or_zero(t):
    return torch.zeros_like(t) if t.grad is None else t.grad


def test_backward_through_discrete_penalty_alone():
    logits, log_std, _ = make_sample(6, 5, 2)
    z, s = grad_leaves(logits, log_std)
    fused_loss(z, s, 0.1, min_entropy_threshold=10.0,
               continuous_min_entropy_threshold=10.0)["discrete_penalty"].backward()
    z_ref, s_ref = grad_leaves(logits, log_std)
    want = oracle(z_ref, s_ref, 0.1, min_entropy_threshold=10.0,
                  continuous_min_entropy_threshold=10.0)["discrete_penalty"]
    expected_z, expected_s = _grads(want, (z_ref, s_ref))
    _assert_grad_close(z.grad, expected_z, 1e-10, 1e-10, "logits")
    assert torch.equal(_grad_or_zero(s), expected_s)  # log_std does not enter it


def test_backward_through_continuous_entropy_alone():
    logits, log_std, _ = make_sample(6, 5, 2)
    z, s = grad_leaves(logits, log_std)
    fused_loss(z, s, 0.1)["continuous_entropy"].backward()
    assert torch.equal(_grad_or_zero(z), torch.zeros_like(z))
    torch.testing.assert_close(s.grad, torch.full_like(s, 1.0 / 6), **F64_TOL)


def test_backward_through_two_combined_outputs():
    logits, log_std, coeff = make_sample(6, 5, 2)
    z, s, c = grad_leaves(logits, log_std, coeff)
    out = fused_loss(z, s, c, min_entropy_threshold=10.0,
                     continuous_min_entropy_threshold=10.0)
    (out["discrete"] - 2.0 * out["continuous_penalty"]).backward()
    z_ref, s_ref, c_ref = grad_leaves(logits, log_std, coeff)
    want = oracle(z_ref, s_ref, c_ref, min_entropy_threshold=10.0,
                  continuous_min_entropy_threshold=10.0)
    (want["discrete"] - 2.0 * want["continuous_penalty"]).backward()
    for got_leaf, want_leaf, name in ((z, z_ref, "logits"), (s, s_ref, "log_std"),
                                      (c, c_ref, "entropy_coeff")):
        _assert_grad_close(_grad_or_zero(got_leaf), _grad_or_zero(want_leaf), 1e-10, 1e-10, name)


def test_backward_accumulates_over_two_calls():
    logits, log_std, _ = make_sample(4, 3, 2)
    z, s = grad_leaves(logits, log_std)
    fused_loss(z, s, 0.1)["total"].backward()
    first_z, first_s = z.grad.clone(), s.grad.clone()
    fused_loss(z, s, 0.1)["total"].backward()
    torch.testing.assert_close(z.grad, 2 * first_z, **F64_TOL)
    torch.testing.assert_close(s.grad, 2 * first_s, **F64_TOL)


@pytest.mark.parametrize("log_std_1d", [False, True], ids=["[B,D]", "[D]"])
def test_log_std_gradient_is_one_value_broadcast_with_stride_0(log_std_1d):
    # H_c is linear in log_std, so every element gets the same gradient: like
    # the backward of torch's sum and mean, it comes back as one value seen
    # through all-zero strides, not a [B, D] fill. The leaf is on the op's device, so that
    # the gradient seen is the op's own (a copy back to the CPU would make it dense).
    logits, log_std, coeff = make_sample(5, 3, 4, shared_log_std=log_std_1d)
    (s_fused,) = grad_leaves(on_device(log_std))
    (s_oracle,) = grad_leaves(log_std)
    (got,) = torch.autograd.grad(fused_loss(logits, s_fused, coeff)["total"], (s_fused,))
    assert got.stride() == (0,) * log_std.dim()
    (want,) = _grads(oracle(logits, s_oracle, coeff)["total"], (s_oracle,))
    torch.testing.assert_close(got.cpu(), want, **F64_TOL)


def test_accumulated_log_std_gradient_is_an_ordinary_writable_tensor():
    logits, log_std, _ = make_sample(4, 3, 2)
    # The leaf is on the op's device: what accumulates is the op's own stride-0 gradient.
    (s,) = grad_leaves(on_device(log_std))
    fused_loss(logits, s, 0.1)["total"].backward()
    expected = s.grad.clone()
    s.grad.mul_(2.0)  # optimizers and gradient clipping write .grad in place
    torch.testing.assert_close(s.grad, 2 * expected, **F64_TOL)


def test_accepts_keyword_arguments():
    logits, log_std = _uniform(3, 4), _constant_log_std(3, 2, 0.0)
    out = fused_loss(
        logits=logits, log_std=log_std, entropy_coeff=0.5, discrete_entropy_weight=2.0,
        continuous_entropy_weight=0.0, min_entropy_threshold=None,
        continuous_min_entropy_threshold=None, penalty_multiplier=1.0,
    )
    assert out["total"].item() == pytest.approx(-0.5 * 2.0 * math.log(4), rel=1e-12)


def test_default_arguments_follow_design():
    # Defaults: w_d = 1, w_c = 0.5, tau_d = tau_c = 0.1, m = 3.
    logits = torch.zeros(2, 1, dtype=torch.float64)  # H_d = 0 < 0.1: penalty 0.3
    log_std = torch.full((2, 1), -HALF_LOG_2PI_E - 1.0, dtype=torch.float64)  # H_c = -1
    out = fused_loss(logits, log_std, 0.2)
    assert out["discrete_penalty"].item() == pytest.approx(3.0 * 0.1, rel=1e-12)
    assert out["continuous_penalty"].item() == pytest.approx(3.0 * 1.1, rel=1e-10)
    assert out["continuous"].item() == pytest.approx(-0.2 * 0.5 * -1.0, rel=1e-10)


def test_double_backward_raises_not_implemented():
    # The backward is exact but differentiable once: a second derivative must
    # fail loudly, never come back missing.
    logits, _, _ = make_sample(4, 3, 2)
    z = logits.clone().requires_grad_()
    (grad,) = torch.autograd.grad(fused_loss(z, None, 0.1)["total"], (z,), create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        grad.sum().backward()
