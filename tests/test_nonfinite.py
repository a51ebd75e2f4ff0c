"""Non-finite inputs: what the fused op does with NaN and infinities, and the opt-in check.

Decided behaviour (the op never inspects values, so it never syncs and never raises on them):

- NaN in ``logits`` makes that row's entropy NaN, hence ``discrete_entropy``, ``discrete``
  and ``total`` NaN, and that row's gradient NaN: no crash and never a silent 0. The other
  head's outputs are unaffected. Likewise NaN in ``log_std`` (``[B, D]`` or ``[D]``) for
  ``continuous_entropy``, ``continuous`` and ``total``. The ``log_std`` gradient does not
  depend on the values of ``log_std`` (the entropy is linear in it), so it stays finite, as
  in ``hee.reference``.
- ``+inf`` logits: ``torch.distributions.Categorical`` rejects them (its default argument
  validation raises ``ValueError``); without validation its entropy of that row is NaN.
  The op agrees with the unvalidated Categorical: NaN, not an error.
- ``-inf`` logits are masked actions (docs/design.md); a row with every action masked is a
  policy with no choice, entropy 0 and gradient 0 (test_hybrid_entropy_loss.py).
  ``+/-inf`` in ``log_std`` give ``+/-inf`` entropies, like ``Normal``.
- The largest finite values of each dtype give finite outputs and gradients.
- ``HybridEntropyRegularizer(check_finite=True)`` turns NaN / ``+inf`` logits and
  non-finite ``log_std`` into a ``ValueError`` naming the input, eagerly and scripted.

Two regressions are pinned: a NaN entropy gives a NaN collapse penalty (never a silent 0),
and ``hee.reference`` gives masked logits a zero gradient however steep the upstream
gradient.

The op's tests run on every backend (``backend``: each CPU kernel build, and CUDA; or
``cpu_and_cuda()`` where a test runs on the default CPU build only), through
``common_utils.fused_loss_on`` / ``run_on``: inputs are built on the CPU and the outputs
come back to it. The CUDA cases are skipped without a GPU. The ``log_std`` tests run every
variant of the op with a ``log_std`` head (op_variants.py: ``[B, D]`` and shared ``[D]``,
one head or two, the per-head coefficient, from distributions, the regularizer). The ``check_finite`` tests stay on the CPU: the check is
the regularizer's own Python code (ATen reductions, alike on every device), and what
non-finite values do in the op on CUDA is covered by the op's tests here.
"""

import math

import pytest
import torch
from torch.distributions import Categorical, Normal

import hybrid_entropy_ext as hee
from common_utils import cpu_and_cuda, fused_loss_on, random_heads, run_on
from op_variants import variants_with
from oracle import KEYS

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
NAN, INF = math.nan, math.inf
# Thresholds off: the NaN-penalty behaviour has its own test below.
NO_PENALTY = dict(min_entropy_threshold=None, continuous_min_entropy_threshold=None)

# (K, column of the NaN): short rows kept in SIMD lanes (K <= 32), the vector part of a
# long row, and the scalar tail of a long row (37 is no multiple of any SIMD width).
NAN_POSITIONS = [(3, 1), (16, 15), (40, 0), (40, 20), (37, 36)]


def grads(out_value, *leaves):
    return torch.autograd.grad(out_value, leaves)


# --------------------------------------------------------------------------------------
# NaN
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k, column", NAN_POSITIONS)
def test_nan_logit_makes_the_discrete_outputs_nan(k, column, dtype, backend):
    logits, log_std = random_heads(k=k, dtype=dtype)
    clean = fused_loss_on(backend, logits, log_std, 0.1, **NO_PENALTY)
    logits[2, column] = NAN
    out = fused_loss_on(backend, logits, log_std, 0.1, **NO_PENALTY)
    for key in ("discrete_entropy", "discrete", "total"):
        assert torch.isnan(out[key]), key
    for key in ("continuous_entropy", "continuous"):
        assert torch.equal(out[key], clean[key]), key


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k, column", NAN_POSITIONS)
def test_nan_logit_makes_its_rows_gradient_nan(k, column, dtype, backend):
    logits, _ = random_heads(k=k, dtype=dtype)
    logits[2, column] = NAN
    logits.requires_grad_(True)
    out = fused_loss_on(backend, logits, None, 0.1, **NO_PENALTY)
    (grad,) = grads(out["total"], logits)
    assert torch.isnan(grad[2]).all()
    rows = [i for i in range(logits.shape[0]) if i != 2]
    assert torch.isfinite(grad[rows]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", variants_with("log_std"), ids=str)
def test_nan_log_std_makes_the_continuous_outputs_nan(variant, dtype, backend):
    # [B, D] or a shared [D] log_std, per the variant.
    logits, log_std, coeff = variant.sample_inputs(70, 4, 3, dtype)  # 70 rows: two row blocks
    clean = run_on(backend, variant.op, logits, log_std, coeff, **NO_PENALTY)
    log_std.view(-1)[-1] = NAN
    out = run_on(backend, variant.op, logits, log_std, coeff, **NO_PENALTY)
    for key in ("continuous_entropy", "continuous", "total"):
        assert torch.isnan(out[key]), key
    for key in ("discrete_entropy", "discrete"):
        assert torch.equal(out[key], clean[key]), key


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_nan_log_std_leaves_the_log_std_gradient_finite_like_the_reference(device):
    # h_c is linear in log_std: d h_c / d log_std = 1 whatever the value (NaN included).
    _, log_std = random_heads(dtype=torch.float64)
    log_std[1, 2] = NAN
    s = log_std.clone().requires_grad_(True)
    s_ref = log_std.clone().requires_grad_(True)
    (got,) = grads(fused_loss_on(device, None, s, 0.1, **NO_PENALTY)["total"], s)
    (want,) = grads(hee.reference.hybrid_entropy_loss(None, s_ref, 0.1, **NO_PENALTY)["total"], s_ref)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("head", ["logits", "log_std"])
def test_nan_entropy_gives_a_nan_collapse_penalty_not_zero(head, device):
    logits, log_std = random_heads(dtype=torch.float64)
    (logits if head == "logits" else log_std)[0, 0] = NAN
    out = fused_loss_on(device, logits, log_std, 0.1, min_entropy_threshold=0.5,
                     continuous_min_entropy_threshold=0.5)
    ref = hee.reference.hybrid_entropy_loss(logits, log_std, 0.1, min_entropy_threshold=0.5,
                                            continuous_min_entropy_threshold=0.5)
    key = "discrete_penalty" if head == "logits" else "continuous_penalty"
    assert torch.isnan(ref[key])
    assert torch.isnan(out[key])


# --------------------------------------------------------------------------------------
# Infinities
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k, column", NAN_POSITIONS)
@pytest.mark.parametrize("count", [1, 2], ids=["one-plus-inf", "two-plus-inf"])
def test_plus_inf_logit_gives_nan_like_unvalidated_categorical(k, column, dtype, count, backend):
    logits, _ = random_heads(k=k, dtype=dtype)
    logits[2, column] = INF
    if count == 2:
        logits[2, (column + 1) % k] = INF
    per_row = Categorical(logits=logits.double(), validate_args=False).entropy()
    assert torch.isnan(per_row[2]) and torch.isfinite(per_row[[0, 1, 3, 4, 5]]).all()
    out = fused_loss_on(backend, logits, None, 0.1, **NO_PENALTY)
    assert torch.isnan(out["discrete_entropy"])
    assert torch.isnan(hee.reference.hybrid_entropy_loss(logits, None, 0.1, **NO_PENALTY)["discrete_entropy"])


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_validated_categorical_rejects_plus_inf_where_the_op_returns_nan(device):
    # The one disagreement with torch.distributions, by design: the op does not read values
    # on the host (no sync); HybridEntropyRegularizer(check_finite=True) raises instead.
    logits, _ = random_heads()
    logits[0, 0] = INF
    # validate_args explicitly: the first torch.compile in a process turns the default off.
    with pytest.raises(ValueError):
        Categorical(logits=logits, validate_args=True)
    assert torch.isnan(fused_loss_on(device, logits, None, 0.1)["discrete_entropy"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("value", [INF, -INF], ids=["plus-inf", "minus-inf"])
@pytest.mark.parametrize("variant", variants_with("log_std"), ids=str)
def test_infinite_log_std_gives_the_infinite_entropy_of_normal(variant, value, dtype, backend):
    # [B, D] or a shared [D] log_std, per the variant.
    logits, log_std, coeff = variant.sample_inputs(dtype=dtype)
    log_std.view(-1)[1] = value
    ls = log_std.double()
    want = Normal(torch.zeros_like(ls), ls.exp(), validate_args=False).entropy().sum(-1)
    want = want.mean() if ls.dim() == 2 else want
    assert want.item() == value
    out = run_on(backend, variant.op, logits, log_std, coeff, **NO_PENALTY)
    assert out["continuous_entropy"].item() == value


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k", [3, 40])
def test_extreme_finite_logits_give_finite_outputs_and_gradients(dtype, k, backend):
    # The shifted logit lowest - max overflows to -inf in the accumulation type; the kernel
    # must still give p = 0 and a 0 contribution, not NaN.
    info = torch.finfo(dtype)
    logits = torch.zeros(4, k, dtype=dtype)
    logits[0, 0], logits[0, 1] = info.max, info.min
    logits[1, :] = info.min
    logits[2, -1] = info.max
    logits[3, ::2] = info.min
    logits.requires_grad_(True)
    log_std = torch.full((4, 2), math.log(info.max) / 2, dtype=dtype, requires_grad=True)
    out = fused_loss_on(backend, logits, log_std, 0.1, min_entropy_threshold=10.0,
                     continuous_min_entropy_threshold=100.0)
    for key in KEYS:
        assert torch.isfinite(out[key]), key
    # Oracle: float64 Categorical of the logits shifted by their row max (exact for these
    # values); unshifted, Categorical computes z - logsumexp(z) with |z| ~ 3e38, where the
    # log 3 of a uniform row is below the spacing, and reports 0 instead of log 3.
    z = logits.detach().double()
    want = Categorical(logits=z - z.max(dim=-1, keepdim=True).values).entropy().mean()
    assert out["discrete_entropy"].item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    for g in grads(out["total"], logits, log_std):
        assert torch.isfinite(g).all()


def test_reference_gives_masked_logits_a_zero_gradient_under_a_steep_penalty():
    logits = torch.tensor([[0.5, -0.2, -INF]], requires_grad=True)
    out = hee.reference.hybrid_entropy_loss(logits, None, 0.01, min_entropy_threshold=10.0)
    (grad,) = grads(out["total"], logits)  # the fused op gives a finite gradient here
    assert torch.isfinite(grad).all()
    assert grad[0, 2] == 0


# --------------------------------------------------------------------------------------
# HybridEntropyRegularizer(check_finite=True)
# --------------------------------------------------------------------------------------

LOGITS_ERROR = r"check_finite=True\): logits contains NaN or \+inf values; expected finite values or -inf"
LOG_STD_ERROR = r"check_finite=True\): log_std contains NaN or \+/-inf values; expected finite values"


@pytest.fixture(params=["eager", "scripted"])
def checking_regularizer(request):
    """A regularizer with check_finite=True, as is or through torch.jit.script."""
    regularizer = hee.HybridEntropyRegularizer(check_finite=True)
    if request.param == "scripted":
        regularizer = torch.jit.script(regularizer)
    return regularizer


def expected_error(regularizer):
    # Scripted code re-raises the ValueError as torch.jit.Error, with the message.
    return torch.jit.Error if isinstance(regularizer, torch.jit.ScriptModule) else ValueError


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
@pytest.mark.parametrize("value", [NAN, INF], ids=["nan", "plus-inf"])
def test_check_finite_rejects_bad_logits_naming_logits(checking_regularizer, value):
    logits, log_std = random_heads()
    logits[3, 1] = value
    with pytest.raises(expected_error(checking_regularizer), match=LOGITS_ERROR):
        checking_regularizer(logits, log_std, 5)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "plus-inf", "minus-inf"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_check_finite_rejects_bad_log_std_naming_log_std(checking_regularizer, value, shared):
    logits, log_std = random_heads()
    if shared:
        log_std = log_std[0].clone()
    log_std.view(-1)[-1] = value
    with pytest.raises(expected_error(checking_regularizer), match=LOG_STD_ERROR):
        checking_regularizer(logits, log_std, 5)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
@pytest.mark.parametrize("head", ["logits", "log_std"])
def test_check_finite_checks_a_lone_head(checking_regularizer, head):
    logits, log_std = random_heads()
    bad = logits if head == "logits" else log_std
    bad[0, 0] = NAN
    args = (logits, None) if head == "logits" else (None, log_std)
    with pytest.raises(expected_error(checking_regularizer), match=f"{head} contains NaN"):
        checking_regularizer(*args, 5)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_check_finite_accepts_masked_logits_and_changes_no_result(checking_regularizer):
    logits, log_std = random_heads()
    logits[::2, 0] = -INF
    got = checking_regularizer(logits, log_std, 5)
    want = hee.HybridEntropyRegularizer()(logits, log_std, 5)
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
@pytest.mark.parametrize("how", ["eager", "scripted"])
def test_without_check_finite_nan_flows_through_to_a_nan_total(how):
    regularizer = hee.HybridEntropyRegularizer()
    assert regularizer.check_finite is False
    if how == "scripted":
        regularizer = torch.jit.script(regularizer)
    logits, log_std = random_heads()
    logits[0, 0] = NAN
    assert torch.isnan(regularizer(logits, log_std, 5)["total"])


def test_check_finite_must_be_a_bool():
    with pytest.raises(TypeError, match=r"check_finite must be a bool, got 1 \(int\)"):
        hee.HybridEntropyRegularizer(check_finite=1)


def test_check_finite_is_not_a_yaml_override():
    # Overrides are YAML keys; check_finite is a constructor argument of its own.
    regularizer = hee.HybridEntropyRegularizer(hee.EntropyRegularizationConfig.preset("short"),
                                               True, penalty_multiplier=5.0)
    assert regularizer.check_finite is True
    assert regularizer.penalty_multiplier == 5.0
    assert "check_finite" not in regularizer.config.to_dict()
