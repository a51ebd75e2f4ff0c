"""``hee.log_prob_and_entropy(..., action_mask=...)``: False rules an action out, exactly as a
``-inf`` logit whatever the logit holds (the op's docstring).

Values and gradients are held to the float64 oracle of tests/oracle.py given the ``-inf``
form of the mask (``logits.masked_fill(~action_mask, -inf)``), and to the op itself on that
form, bitwise. Each test runs once per CPU kernel build and once on CUDA (the ``backend``
fixture; the CUDA cases are skipped without a GPU).
"""

import pytest
import torch

import hybrid_entropy_ext as hee
from token_terms_checks import (DTYPES, INF, NAN, ROWS, FORWARD_OP, BACKWARD_OP, assert_opcheck_passes,
                              check_against_oracle, random_actions, random_logits, token_terms)

# K <= 32: rows in SIMD lanes in the forward; above: along the lanes (with a tail past the
# last whole vector at 33 and 100).
KS = (1, 2, 7, 8, 16, 31, 33, 64, 100, 1000)


def random_action_mask(*shape, allowed_fraction=0.6):
    """A bool mask with about ``allowed_fraction`` allowed, action 0 always allowed."""
    allowed = torch.rand(*shape) < allowed_fraction
    allowed[..., 0] = True
    return allowed


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_and_gradients_match_the_oracle_on_the_neg_inf_form(backend, dtype, k):
    logits = random_logits(ROWS, k, dtype=dtype)
    check_against_oracle(backend, logits, random_actions((ROWS,), k), action_mask=random_action_mask(ROWS, k))


@pytest.mark.parametrize("k", [7, 33, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_an_action_mask_gives_bitwise_the_results_of_neg_inf_logits(backend, dtype, k):
    logits = random_logits(ROWS, k, dtype=dtype)
    allowed = random_action_mask(ROWS, k)
    actions = random_actions((ROWS,), k)
    cot_lp, cot_h = torch.randn(ROWS), torch.randn(ROWS)

    def values_and_grad(logits, action_mask):
        leaf = logits.clone().requires_grad_(True)
        lp, h = token_terms(backend, leaf, actions, action_mask=action_mask)
        finite = torch.isfinite(lp)
        (grad,) = torch.autograd.grad([torch.where(finite, lp, 0.0), h], leaf, [cot_lp, cot_h])
        return lp.detach(), h.detach(), grad

    for got, want in zip(values_and_grad(logits, allowed), values_and_grad(logits.masked_fill(~allowed, -INF), None)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("k", [7, 33, 100])
@pytest.mark.parametrize("stored", [NAN, INF, -INF, 1e30], ids=["nan", "inf", "neg-inf", "1e30"])
def test_ruled_out_actions_get_probability_0_and_gradient_exactly_0_whatever_their_logit(backend, stored, k):
    logits = random_logits(ROWS, k, dtype=torch.float32)
    allowed = random_action_mask(ROWS, k)
    logits[~allowed] = stored
    lp, h, grad = check_against_oracle(backend, logits, random_actions((ROWS,), k), action_mask=allowed)
    assert (grad[~allowed] == 0).all()
    assert torch.isfinite(h).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("k", [1, 7, 33, 100])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_row_with_nothing_allowed_has_entropy_0_log_prob_neg_inf_and_gradient_0(backend, dtype, k):
    rows = [0, 3, 6]
    allowed = random_action_mask(7, k)
    allowed[rows] = False
    lp, h, grad = check_against_oracle(backend, random_logits(7, k, dtype=dtype), random_actions((7,), k),
                                       action_mask=allowed)
    assert (h[rows] == 0).all() and (lp[rows] == -INF).all() and (grad[rows] == 0).all()
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("k", [7, 33, 100])
def test_a_ruled_out_taken_action_has_log_prob_neg_inf_and_no_gradient_of_its_own(backend, k):
    allowed = random_action_mask(ROWS, k)
    allowed[:, 1] = False
    actions = random_actions((ROWS,), k)
    actions[::2] = 1
    lp, h, grad = check_against_oracle(backend, random_logits(ROWS, k, dtype=torch.float32), actions,
                                       action_mask=allowed)
    taken_allowed = allowed.gather(1, actions[:, None])[:, 0]
    assert not taken_allowed[::2].any()
    assert (lp[~taken_allowed] == -INF).all() and torch.isfinite(lp[taken_allowed]).all()
    assert (grad[:, 1] == 0).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("k", [7, 33, 100])
def test_one_action_mask_row_expanded_to_every_sample_matches_the_oracle(backend, k):
    row = random_action_mask(k)
    allowed = row.expand(4, 5, k)  # row strides 0: read in place, not copied
    lp, _, grad = check_against_oracle(backend, random_logits(4, 5, k, dtype=torch.float32),
                                       random_actions((4, 5), k), action_mask=allowed)
    assert (grad[..., ~row] == 0).all()


@pytest.mark.parametrize("k", [7, 100])
def test_an_action_mask_of_transposed_layout_matches_the_oracle(backend, k):
    allowed = random_action_mask(ROWS, k).t().contiguous().t()  # column stride ROWS: copied to rows
    assert allowed.stride() == (1, ROWS)
    check_against_oracle(backend, random_logits(ROWS, k, dtype=torch.float32), random_actions((ROWS,), k),
                         action_mask=allowed)


@pytest.mark.parametrize("k", [7, 33, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_an_action_mask_with_a_row_mask_and_a_temperature_matches_the_oracle(backend, dtype, k):
    logits = random_logits(3, 13, k, dtype=dtype)
    keep = torch.rand(3, 13) < 0.7
    logits[~keep] = NAN
    actions = random_actions((3, 13), k).masked_fill(~keep, -100)
    lp, h, grad = check_against_oracle(backend, logits, actions, keep, temperature=0.6,
                                       action_mask=random_action_mask(3, 13, k))
    assert (lp[~keep] == 0).all() and (h[~keep] == 0).all() and (grad[~keep] == 0).all()


@pytest.mark.parametrize("k", [7, 100])
def test_entropy_alone_with_an_action_mask_matches_the_oracle(backend, k):
    check_against_oracle(backend, random_logits(ROWS, k, dtype=torch.float32), None,
                         action_mask=random_action_mask(ROWS, k))


@pytest.mark.parametrize("k", [7, 100])
def test_an_all_true_action_mask_gives_bitwise_the_unmasked_results(backend, k):
    logits = random_logits(ROWS, k, dtype=torch.float32)
    actions = random_actions((ROWS,), k)
    with_mask = token_terms(backend, logits, actions, action_mask=torch.ones(ROWS, k, dtype=torch.bool))
    without = token_terms(backend, logits, actions)
    for got, want in zip(with_mask, without):
        assert torch.equal(got, want)


ERRORS = {
    "uint8": (lambda: torch.ones(2, 3, 5, dtype=torch.uint8), TypeError, r"action_mask must be bool"),
    "float": (lambda: torch.ones(2, 3, 5), TypeError, r"action_mask must be bool"),
    "leading-shape": (lambda: torch.ones(2, 3, dtype=torch.bool), ValueError, r"action_mask must have the logits' shape"),
    "one-row": (lambda: torch.ones(5, dtype=torch.bool), ValueError, r"action_mask must have the logits' shape"),
    "other-k": (lambda: torch.ones(2, 3, 4, dtype=torch.bool), ValueError, r"action_mask must have the logits' shape"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_an_invalid_action_mask_raises_naming_it(case):
    make_mask, error, message = ERRORS[case]
    logits, actions = torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(error, match=message):
        hee.log_prob_and_entropy(logits, actions, action_mask=make_mask())
    with pytest.raises(error, match=message):
        FORWARD_OP(logits, actions, None, 1.0, make_mask())


@pytest.mark.parametrize("requires_grad", [True, False], ids=["requires-grad", "no-grad"])
def test_forward_op_with_an_action_mask_passes_opcheck(requires_grad):
    logits = random_logits(3, 4, 7, dtype=torch.float32).requires_grad_(requires_grad)
    assert_opcheck_passes(FORWARD_OP, (logits, random_actions((3, 4), 7), torch.rand(3, 4) < 0.7, 0.8,
                                       random_action_mask(3, 4, 7)))


def test_backward_op_with_an_action_mask_passes_opcheck():
    logits, actions, keep = random_logits(3, 4, 7, dtype=torch.float32), random_actions((3, 4), 7), torch.rand(3, 4) < 0.7
    allowed = random_action_mask(3, 4, 7)
    _, h, row_stats = FORWARD_OP(logits, actions, keep, 0.8, allowed)
    assert_opcheck_passes(BACKWARD_OP, (torch.randn_like(h), torch.randn_like(h), logits, actions, keep, row_stats,
                                        0.8, allowed))


def test_the_reference_takes_the_action_mask_as_neg_inf_logits():
    logits = random_logits(ROWS, 9, dtype=torch.float64)
    allowed = random_action_mask(ROWS, 9)
    actions = random_actions((ROWS,), 9)
    got = hee.reference.log_prob_and_entropy(logits.masked_fill(~allowed, NAN), actions, action_mask=allowed)
    want = hee.reference.log_prob_and_entropy(logits.masked_fill(~allowed, -INF), actions)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
