"""``hee.hybrid_entropy_loss(..., action_mask=...)``: False rules a discrete action out,
exactly as a ``-inf`` logit whatever the logit holds (the function's docstring).

Values and gradients are held to the float64 oracle of tests/oracle.py (``torch.distributions``
entropies) given the ``-inf`` form of the mask (``logits.masked_fill(~action_mask, -inf)``),
and to the op itself on that form, bitwise. Each kernel test runs once per CPU kernel build
and once on CUDA (the ``backend`` fixture; the CUDA cases are skipped without a GPU).
"""

import math

import pytest
import torch
from torch.distributions import Categorical

import hybrid_entropy_ext as hee
from hybrid_entropy_ext import reference
from common_utils import run_on, seeded_heads
from oracle import KEYS, distributions_oracle, weighted_output_sum

INF = math.inf
# Both penalties active: every output's gradient reaches the logits.
PENALTIES_ACTIVE = dict(min_entropy_threshold=10.0, continuous_min_entropy_threshold=10.0)
# K <= 32: rows in SIMD lanes in the CPU forward; above: along the lanes (with a tail past the
# last whole vector at 33 and 100); 1000 is a row per block on CUDA.
KS = (1, 3, 7, 16, 33, 100, 1000)
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
ROWS = 37


def random_action_mask(*shape, allowed_fraction=0.6, seed=1):
    """A bool mask with about ``allowed_fraction`` allowed, action 0 always allowed."""
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.rand(*shape, generator=generator) < allowed_fraction
    allowed[..., 0] = True
    return allowed


def fused_values_and_grads(device, logits, log_std, action_mask, **kwargs):
    """The seven outputs and the gradients of their weighted sum w.r.t. both heads."""
    leaves = [logits.detach().clone().requires_grad_(True), log_std.detach().clone().requires_grad_(True)]
    out = run_on(device, hee.hybrid_entropy_loss, *leaves, 0.05, action_mask=action_mask, **kwargs)
    grads = torch.autograd.grad(weighted_output_sum(out), leaves)
    return {k: v.detach() for k, v in out.items()}, grads


# tolerances (values, gradients) against the float64 oracle on the same (rounded) logits:
# the op accumulates 16-bit inputs in float32, and rounds their gradients to 16 bits.
TOLERANCES = {
    torch.float64: (dict(rtol=1e-10, atol=1e-12), dict(rtol=1e-9, atol=1e-12)),
    torch.float32: (dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-4, atol=1e-7)),
    torch.bfloat16: (dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-2, atol=1e-5)),
    torch.float16: (dict(rtol=1e-5, atol=1e-6), dict(rtol=2e-3, atol=1e-6)),
}


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_and_gradients_match_the_oracle_on_the_neg_inf_form(backend, dtype, k):
    logits, log_std = seeded_heads(ROWS, k, dtype=dtype, seed=k)
    allowed = random_action_mask(ROWS, k, seed=k)
    got, (grad_logits, grad_log_std) = fused_values_and_grads(backend, logits, log_std, allowed, **PENALTIES_ACTIVE)

    leaf = logits.double().requires_grad_(True)
    std_leaf = log_std.double().requires_grad_(True)
    want = distributions_oracle(leaf.masked_fill(~allowed, -INF), std_leaf, 0.05, **PENALTIES_ACTIVE)
    want_logits, want_log_std = torch.autograd.grad(weighted_output_sum(want), [leaf, std_leaf])

    value_tol, grad_tol = TOLERANCES[dtype]
    for key in KEYS:
        torch.testing.assert_close(got[key].double(), want[key].detach(), **value_tol, msg=key)
    assert grad_logits.dtype == dtype
    assert (grad_logits[~allowed] == 0).all()
    torch.testing.assert_close(grad_logits.double(), want_logits, **grad_tol)
    torch.testing.assert_close(grad_log_std.double(), want_log_std, **grad_tol)


@pytest.mark.parametrize("k", [7, 33, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_an_action_mask_gives_bitwise_the_results_of_neg_inf_logits(backend, dtype, k):
    logits, log_std = seeded_heads(ROWS, k, dtype=dtype)
    allowed = random_action_mask(ROWS, k)
    got, got_grads = fused_values_and_grads(backend, logits, log_std, allowed, **PENALTIES_ACTIVE)
    want, want_grads = fused_values_and_grads(
        backend, logits.masked_fill(~allowed, -INF), log_std, None, **PENALTIES_ACTIVE)
    for key in got:
        assert torch.equal(got[key], want[key]), key
    for g, w in zip(got_grads, want_grads):
        assert torch.equal(g, w)


@pytest.mark.parametrize("k", [7, 33, 100])
@pytest.mark.parametrize("stored", [math.nan, INF, -INF, 1e30], ids=["nan", "inf", "neg-inf", "1e30"])
def test_ruled_out_actions_get_probability_0_and_gradient_exactly_0_whatever_their_logit(backend, stored, k):
    logits, log_std = seeded_heads(ROWS, k)
    allowed = random_action_mask(ROWS, k)
    stored_logits = logits.masked_fill(~allowed, stored)
    got, (grad_logits, _) = fused_values_and_grads(backend, stored_logits, log_std, allowed, **PENALTIES_ACTIVE)
    want, (want_logits, _) = fused_values_and_grads(
        backend, logits.masked_fill(~allowed, -INF), log_std, None, **PENALTIES_ACTIVE)
    for key in got:
        assert torch.equal(got[key], want[key]), key
    assert (grad_logits[~allowed] == 0).all()
    assert torch.equal(grad_logits, want_logits)


@pytest.mark.parametrize("k", [1, 7, 100])
def test_a_row_with_nothing_allowed_has_entropy_0_and_gradient_0(backend, k):
    logits, log_std = seeded_heads(4, k)
    allowed = torch.ones(4, k, dtype=torch.bool)
    allowed[2] = False
    out, (grad_logits, _) = fused_values_and_grads(backend, logits, log_std, allowed, min_entropy_threshold=None)
    want = torch.stack([categorical_entropy(logits[i]) for i in (0, 1, 3)] + [torch.zeros((), dtype=torch.float64)])
    torch.testing.assert_close(out["discrete_entropy"].double(), want.sum() / 4, rtol=1e-5, atol=1e-6)
    assert (grad_logits[2] == 0).all() and torch.isfinite(grad_logits).all()


def categorical_entropy(row_logits):
    return Categorical(logits=row_logits.double()).entropy()


@pytest.mark.parametrize("layout", ["broadcast row", "transposed", "column slice"])
def test_a_mask_of_any_strides_gives_the_results_of_a_contiguous_one(backend, layout):
    logits, log_std = seeded_heads(ROWS, 33)
    # The view is taken on the backend's device: moving one there would copy it dense.
    if layout == "broadcast row":
        allowed = random_action_mask(33).to(backend).expand(ROWS, 33)
    elif layout == "transposed":
        allowed = random_action_mask(33, ROWS).to(backend).t()
    else:
        allowed = random_action_mask(ROWS, 40).to(backend)[:, 5:38]
    assert not allowed.is_contiguous()
    got, got_grads = fused_values_and_grads(backend, logits, log_std, allowed)
    want, want_grads = fused_values_and_grads(backend, logits, log_std, allowed.contiguous())
    for key in got:
        assert torch.equal(got[key], want[key]), key
    for g, w in zip(got_grads, want_grads):
        assert torch.equal(g, w)


def test_sequences_take_a_mask_of_the_logits_shape():
    logits, log_std = seeded_heads(4 * 5, 6)
    allowed = random_action_mask(4 * 5, 6)
    sample_mask = torch.arange(5) < torch.tensor([[5], [2], [4], [1]])
    got = hee.hybrid_entropy_loss(logits.reshape(4, 5, 6), log_std.reshape(4, 5, 3), 0.05,
                                  sample_mask=sample_mask, loss_agg_mode="seq-mean-token-mean",
                                  action_mask=allowed.reshape(4, 5, 6))
    want = reference.hybrid_entropy_loss(logits.double().reshape(4, 5, 6), log_std.double().reshape(4, 5, 3), 0.05,
                                         sample_mask=sample_mask, loss_agg_mode="seq-mean-token-mean",
                                         action_mask=allowed.reshape(4, 5, 6))
    for key in KEYS:
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-5, atol=1e-6, msg=key)


def test_row_weights_weigh_the_masked_rows_entropies_like_the_oracle():
    logits, log_std = seeded_heads(ROWS, 9)
    allowed = random_action_mask(ROWS, 9)
    weights = torch.rand(ROWS, generator=torch.Generator().manual_seed(3))
    got = hee.hybrid_entropy_loss(logits, log_std, 0.05, sample_mask=weights, action_mask=allowed)
    want = distributions_oracle(logits.double().masked_fill(~allowed, -INF), log_std.double(), 0.05,
                                row_weights=weights.double())
    for key in KEYS:
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_reference_matches_the_oracle_on_the_neg_inf_form():
    logits, log_std = seeded_heads(ROWS, 9, dtype=torch.float64)
    allowed = random_action_mask(ROWS, 9)
    got = reference.hybrid_entropy_loss(logits, log_std, 0.05, action_mask=allowed)
    want = distributions_oracle(logits.masked_fill(~allowed, -INF), log_std, 0.05)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)


# --- the regularizer and distributions --------------------------------------------------


def test_the_regularizer_passes_the_mask_to_the_loss():
    logits, log_std = seeded_heads(ROWS, 9)
    allowed = random_action_mask(ROWS, 9)
    regularizer = hee.HybridEntropyRegularizer()
    got = regularizer(logits, log_std, 0, action_mask=allowed)
    want = hee.hybrid_entropy_loss(logits, log_std, got["current_entropy_coeff"].item(), action_mask=allowed)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key


def test_check_finite_ignores_what_a_ruled_out_action_holds():
    logits, log_std = seeded_heads(ROWS, 9)
    allowed = random_action_mask(ROWS, 9)
    stored = logits.masked_fill(~allowed, math.nan)
    regularizer = hee.HybridEntropyRegularizer(check_finite=True)
    got = regularizer(stored, log_std, 0, action_mask=allowed)
    want = regularizer(logits, log_std, 0, action_mask=allowed)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key
    with pytest.raises(ValueError, match="logits contains NaN"):
        regularizer(stored, log_std, 0)


def test_a_scripted_regularizer_takes_the_mask():
    logits, log_std = seeded_heads(ROWS, 9)
    allowed = random_action_mask(ROWS, 9)
    eager = hee.HybridEntropyRegularizer()
    scripted = torch.jit.script(hee.HybridEntropyRegularizer())
    got = scripted(logits, log_std, 0, None, allowed)
    want = eager(logits, log_std, 0, None, allowed)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key


class SB3MaskableCategorical(Categorical):
    """sb3-contrib 2.9.2's ``MaskableCategorical``, as its ``apply_masking`` builds it: the
    mask kept as ``masks``, the ruled-out logits replaced by -1e8."""

    def __init__(self, logits, masks):
        self.masks = masks
        self._original_logits = logits
        super().__init__(logits=torch.where(masks, logits, torch.tensor(-1e8, dtype=logits.dtype)))


class TorchRLMaskedCategorical(Categorical):
    """TorchRL 0.14.1's ``MaskedCategorical`` with a dense mask: kept as ``_mask``, the
    ruled-out logits filled with ``neg_inf`` (-inf by default; here a finite one, which leaves
    those actions a probability that only the mask takes away)."""

    def __init__(self, logits, mask, neg_inf=-2.0):
        self._mask = mask
        self._sparse_mask = False
        super().__init__(logits=logits.masked_fill(~mask, neg_inf))


def recording_loss(monkeypatch):
    """The action masks hybrid_entropy_loss_from_distributions hands to the fused op."""
    from hybrid_entropy_ext.ops import distributions

    masks = []

    def loss(*args, action_mask=None, **kwargs):
        masks.append(action_mask)
        return hee.hybrid_entropy_loss(*args, action_mask=action_mask, **kwargs)

    monkeypatch.setattr(distributions, "hybrid_entropy_loss", loss)
    return masks


@pytest.mark.parametrize("make", [SB3MaskableCategorical, TorchRLMaskedCategorical], ids=["sb3-contrib", "torchrl"])
def test_a_masked_categoricals_mask_reaches_the_op(monkeypatch, make):
    masks = recording_loss(monkeypatch)
    logits, _ = seeded_heads(ROWS, 9)
    allowed = random_action_mask(ROWS, 9)
    hee.hybrid_entropy_loss_from_distributions(make(logits, allowed), 0.05)
    assert len(masks) == 1 and torch.equal(masks[0], allowed)


def test_a_broadcast_mask_of_a_masked_categorical_is_expanded_to_the_logits():
    logits, _ = seeded_heads(ROWS, 9)
    one_row = random_action_mask(9)
    dist = TorchRLMaskedCategorical(logits, one_row.expand(ROWS, 9))
    dist._mask = one_row  # as a policy may keep it: one row for the batch
    got = hee.hybrid_entropy_loss_from_distributions(dist, 0.05)
    want = hee.hybrid_entropy_loss(logits, None, 0.05, action_mask=one_row.expand(ROWS, 9))
    assert torch.equal(got["discrete_entropy"], want["discrete_entropy"])


def test_the_mask_of_a_torchrl_masked_categorical_with_a_finite_neg_inf_rules_its_actions_out():
    logits, _ = seeded_heads(ROWS, 9)
    allowed = random_action_mask(ROWS, 9)
    leaf = logits.clone().requires_grad_(True)
    got = hee.hybrid_entropy_loss_from_distributions(TorchRLMaskedCategorical(leaf, allowed), 0.05)
    want = distributions_oracle(logits.double().masked_fill(~allowed, -INF), None, 0.05)
    torch.testing.assert_close(got["discrete_entropy"].double(), want["discrete_entropy"], rtol=1e-5, atol=1e-6)
    # The logits alone (-2.0 where ruled out) give those actions a share of the entropy.
    unmasked = hee.hybrid_entropy_loss(leaf.detach().masked_fill(~allowed, -2.0), None, 0.05)
    assert (unmasked["discrete_entropy"] - got["discrete_entropy"]).abs() > 0.1
    (grad,) = torch.autograd.grad(got["total"], leaf)
    assert (grad[~allowed] == 0).all()


# --- bad arguments -------------------------------------------------------------------


def test_a_mask_that_is_not_bool_is_a_type_error():
    logits, log_std = seeded_heads(4, 5)
    with pytest.raises(TypeError, match="action_mask must be bool"):
        hee.hybrid_entropy_loss(logits, log_std, 0.05, action_mask=torch.ones(4, 5))


@pytest.mark.parametrize("shape", [(4, 6), (5, 4), (4,), (1, 5)], ids=str)
def test_a_mask_of_another_shape_is_a_value_error(shape):
    logits, log_std = seeded_heads(4, 5)
    with pytest.raises(ValueError, match="action_mask must have the logits' shape"):
        hee.hybrid_entropy_loss(logits, log_std, 0.05, action_mask=torch.ones(shape, dtype=torch.bool))


def test_a_mask_of_the_same_size_but_another_leading_shape_is_a_value_error():
    logits = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match="action_mask must have the logits' shape"):
        hee.hybrid_entropy_loss(logits, None, 0.05, action_mask=torch.ones(3, 2, 5, dtype=torch.bool))


def test_a_mask_without_logits_is_a_value_error():
    with pytest.raises(ValueError, match="no logits"):
        hee.hybrid_entropy_loss(None, torch.zeros(4, 2), 0.05, action_mask=torch.ones(4, 5, dtype=torch.bool))


def test_a_mask_on_another_device_is_a_value_error():
    logits, log_std = seeded_heads(4, 5)
    with pytest.raises(ValueError, match="action_mask must be on the logits' device"):
        hee.hybrid_entropy_loss(logits, log_std, 0.05, action_mask=torch.ones(4, 5, dtype=torch.bool, device="meta"))


def test_the_forward_op_with_a_mask_passes_opcheck():
    logits, log_std = seeded_heads(6, 7)
    args = (logits.requires_grad_(), log_std.requires_grad_(), torch.tensor(0.05, requires_grad=True),
            1.0, 0.5, 10.0, 10.0, 3.0, None, None, random_action_mask(6, 7))
    results = torch.library.opcheck(torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default, args)
    assert results and all(status == "SUCCESS" for status in results.values()), results


def test_the_compiled_loss_with_a_mask_gives_eager_values_and_gradients():
    logits, log_std = seeded_heads(ROWS, 9)
    allowed = random_action_mask(ROWS, 9)

    def loss(logits, log_std, allowed):
        out = hee.hybrid_entropy_loss(logits, log_std, 0.05, action_mask=allowed, **PENALTIES_ACTIVE)
        return weighted_output_sum(out)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (compiled, loss):
        leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
        value = fn(*leaves, allowed)
        results.append((value.detach(), *torch.autograd.grad(value, leaves)))
    for got, want in zip(*results):
        assert torch.equal(got, want)
