"""``hee.log_prob_and_entropy``: the per-token log-probability of the taken action and the
entropy of ``softmax(logits / T)``, held to its docstring (hybrid_entropy_ext/ops/token_terms.py).

The values and gradients are held to the float64 oracle of tests/oracle.py
(``token_terms_oracle``: ``torch.distributions.Categorical`` per row, with the masked-row and
``-inf`` conventions written out), which shares no code with the library; the pure-PyTorch
``hee.reference.log_prob_and_entropy`` is held to the same oracle.

The tests of values and gradients run once per CPU kernel build and once on CUDA (the
``backend`` fixture of conftest.py; the CUDA cases are skipped without a GPU). Inputs are
built on the CPU, moved to the test's device (views of a layout are taken there), and the
outputs and gradients come back to the CPU (``common_utils.run_on``).

The checks against the oracle and their tolerances are in tests/token_terms_checks.py.
"""

import math
import re

import pytest
import torch

import hybrid_entropy_ext as hee
from common_utils import GRAD_TOLERANCES, SUPPORTED_CPU_ISAS, VALUE_TOLERANCES, forced_cpu_isa
from oracle import token_terms_oracle
from token_terms_checks import (BACKWARD_OP, DTYPES, FORWARD_OP, INF, NAN, ROWS, assert_opcheck_passes,
                                check_against_oracle, grads_of, out_dtype, random_actions, random_logits, token_terms,
                                value_tol)

# K <= 32: rows in SIMD lanes in the forward; above: along the lanes. The backward's
# thresholds differ (8 on AVX2, 9 on AVX-512), hence 7, 8 and 16 too.
KS = (1, 2, 7, 8, 16, 31, 32, 33, 100, 1000)
# --------------------------------------------------------------------------------------
# Values and gradients against the float64 oracle
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_and_gradients_match_the_oracle_for_every_dtype_and_k(backend, dtype, k):
    logits = random_logits(ROWS, k, dtype=dtype)
    check_against_oracle(backend, logits, random_actions((ROWS,), k))


@pytest.mark.parametrize("k", [7, 100])
@pytest.mark.parametrize("lead", [(), (1,), (5,), (3, 4), (2, 3, 5)], ids=str)
def test_any_number_of_leading_dims_gives_outputs_of_the_leading_shape(backend, lead, k):
    logits = random_logits(*lead, k, dtype=torch.float32)
    lp, h, _ = check_against_oracle(backend, logits, random_actions(lead, k))
    assert lp.shape == h.shape == lead


# (base shape, view applied to the logits, the view's K)
LAYOUTS = {
    # [B, T, K] made from [T, B, K]: leading dims transposed.
    "transposed-leading-dims": ((6, 5, 33), lambda t: t.transpose(0, 1)),
    # A slice of a wider last dim: the row stride is not K.
    "slice-of-a-wider-last-dim": ((9, 40), lambda t: t[:, 3:20]),
    # Column stride != 1: the transpose of a [K, N] tensor.
    "column-stride-not-1-small-k": ((7, 11), lambda t: t.t()),
    "column-stride-not-1-large-k": ((100, 11), lambda t: t.t()),
    # Every row the same storage (row stride 0).
    "expanded-rows-stride-0": ((1, 33), lambda t: t.expand(10, 33)),
    "expanded-rows-stride-0-small-k": ((1, 5), lambda t: t.expand(3, 4, 5)),
    # Every other row.
    "every-other-row": ((16, 8), lambda t: t[::2]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_strided_logits_match_the_oracle(backend, layout, dtype):
    shape, view = LAYOUTS[layout]
    logits = random_logits(*shape, dtype=dtype)
    viewed = view(logits)
    assert not viewed.is_contiguous()
    got_lp, got_h, got_grad = check_against_oracle(
        backend, logits, random_actions(viewed.shape[:-1], viewed.shape[-1]), view=view)
    # And the same as on a contiguous copy (bar summation order).
    lp, h = hee.log_prob_and_entropy(viewed.contiguous(), None, None)
    torch.testing.assert_close(got_h, h, **value_tol(dtype))


@pytest.mark.parametrize("k", [5, 33])
def test_many_rows_split_across_threads_with_runs_of_masked_rows_match_the_oracle(backend, k):
    # At least two of the CPU's chunks (about 32768 elements each) for every k.
    rows = 16384
    logits = random_logits(rows, k, dtype=torch.float32)
    mask = torch.rand(rows) < 0.8
    mask[1000:1500] = False  # a long run of padding
    logits[~mask] = NAN
    actions = random_actions((rows,), k).masked_fill(~mask, -100)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        check_against_oracle(backend, logits, actions, mask)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("k", [7, 100])
def test_strided_actions_and_mask_are_read_by_position(backend, k):
    # Transposed [T, B] actions and mask for [B, T, K] logits (transposed too), int32 actions.
    logits = random_logits(6, 5, k, dtype=torch.float32)
    actions = random_actions((6, 5), k, torch.int32).t()
    mask = (torch.rand(6, 5) < 0.7).t()
    actions.masked_fill_(~mask, -100)
    assert not actions.is_contiguous() and not mask.is_contiguous()
    check_against_oracle(backend, logits, actions, mask, view=lambda t: t.transpose(0, 1))


@pytest.mark.parametrize("k", [7, 100])
def test_int32_actions_give_the_int64_results(backend, k):
    logits = random_logits(ROWS, k, dtype=torch.float32)
    actions = random_actions((ROWS,), k)
    lp32, h32, grad32 = check_against_oracle(backend, logits, actions.int())
    lp64, h64, _ = check_against_oracle(backend, logits, actions)
    assert torch.equal(lp32, lp64) and torch.equal(h32, h64)


@pytest.mark.parametrize("k", [7, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_without_actions_log_prob_is_none_and_entropy_and_its_gradient_are_right(backend, dtype, k):
    logits = random_logits(4, 6, k, dtype=dtype)
    lp, h, grad = check_against_oracle(backend, logits, None)
    assert lp is None
    # The entropy is the same as with actions.
    _, h_with, _ = check_against_oracle(backend, logits, random_actions((4, 6), k))
    assert torch.equal(h, h_with)


@pytest.mark.parametrize("k", [7, 33, 100])
@pytest.mark.parametrize("upstream", [("log_prob",), ("entropy",), ("log_prob", "entropy")], ids="+".join)
def test_every_combination_of_upstream_gradients_matches_the_oracle(backend, upstream, k):
    logits = random_logits(ROWS, k, dtype=torch.float32)
    mask = torch.rand(ROWS) < 0.8
    check_against_oracle(backend, logits, random_actions((ROWS,), k), mask, upstream=upstream)


@pytest.mark.parametrize("k", [7, 100])
@pytest.mark.parametrize("output", ["log_prob", "entropy"])
def test_sum_backward_with_an_expanded_upstream_gradient_matches_the_oracle(backend, output, k):
    # out.sum().backward() hands the op a stride-0 expanded tensor of ones.
    logits = random_logits(3, 5, k, dtype=torch.float64)
    actions = random_actions((3, 5), k)
    leaf = logits.clone().requires_grad_(True)
    got = dict(zip(("log_prob", "entropy"), token_terms(backend, leaf, actions)))
    got[output].sum().backward()
    oracle_leaf = logits.clone().requires_grad_(True)
    want = dict(zip(("log_prob", "entropy"), token_terms_oracle(oracle_leaf, actions)))
    want[output].sum().backward()
    torch.testing.assert_close(leaf.grad, oracle_leaf.grad, **GRAD_TOLERANCES[torch.float64])


@pytest.mark.parametrize("k", [7, 100])
@pytest.mark.parametrize("temperature", [0.5, 1.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_temperature_gives_the_distribution_of_logits_over_t_and_its_gradient(backend, dtype, temperature, k):
    logits = random_logits(ROWS, k, dtype=dtype)
    actions = random_actions((ROWS,), k)
    check_against_oracle(backend, logits, actions, temperature=temperature)
    # The same as temperature 1 on logits / T (values; the gradient has the factor 1/T).
    if dtype == torch.float64:
        leaf = logits.clone().requires_grad_(True)
        lp, h = token_terms(backend, leaf, actions, temperature=temperature)
        scaled = (logits / temperature).requires_grad_(True)
        lp1, h1 = token_terms(backend, scaled, actions)
        torch.testing.assert_close(lp, lp1, **value_tol(dtype))
        torch.testing.assert_close(h, h1, **value_tol(dtype))
        (g,) = torch.autograd.grad(lp.sum() + h.sum(), leaf)
        (g1,) = torch.autograd.grad(lp1.sum() + h1.sum(), scaled)
        torch.testing.assert_close(g, g1 / temperature, **GRAD_TOLERANCES[dtype])


def extreme_logits(k, dtype):
    """Rows the kernels must not lose precision on: huge offsets (+-1e4), a huge spread
    (nearly one-hot), every logit equal (uniform), every logit -1e30, and logits masked with
    finfo.min instead of -inf (as many models do)."""
    finfo_min = torch.finfo(torch.float32 if dtype != torch.float64 else dtype).min
    rows = [
        1e4 + torch.randn(3, k, dtype=torch.float64),
        -1e4 + torch.randn(3, k, dtype=torch.float64),
        1e4 * torch.randn(3, k, dtype=torch.float64),
        torch.full((2, k), 0.37, dtype=torch.float64),
        torch.full((2, k), -1e30, dtype=torch.float64),
    ]
    padded = 2.0 * torch.randn(3, k, dtype=torch.float64)
    padded[:, k // 2 + 1:] = finfo_min
    rows.append(padded)
    logits = torch.cat(rows)
    if dtype == torch.float16:  # beyond float16's range: its largest and smallest values
        logits = logits.clamp(-60000.0, 60000.0)
    return logits.to(dtype)


@pytest.mark.parametrize("k", [2, 7, 33, 100])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_huge_and_tied_logits_match_the_oracle(backend, dtype, k):
    # T = 1: the tempered logits are the inputs themselves. (With another T, rounding z = x / T
    # to the accumulation dtype moves a logit of 1e4 by up to 1e-3 in float32, an error of
    # the inputs rather than of the op's arithmetic; equal logits, below, are exact anyway.)
    logits = extreme_logits(k, dtype)
    check_against_oracle(backend, logits, random_actions(logits.shape[:-1], k))


# Equal logits of any magnitude: every tempered logit rounds to the same value, so the
# distribution is exactly uniform whatever the temperature and the dtype.
EQUAL_LOGIT_VALUES = {
    torch.float64: (0.37, -1e6, -1e30, 1e30, -1e300),
    torch.float32: (0.37, -1e6, -1e30, 1e30, -3e38),
    torch.bfloat16: (0.37, -1e6, -1e30, 1e30),
    torch.float16: (0.37, -60000.0, 60000.0),
}


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.7])
@pytest.mark.parametrize("k", [7, 33])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_equal_logits_give_the_uniform_distribution_at_any_magnitude_and_temperature(backend, dtype, k, temperature):
    # Values whose tempered logit overflows the accumulation dtype (-3e38 / 0.7 in float32)
    # are left out: that is -inf, a different row.
    largest = torch.finfo(out_dtype(dtype)).max
    values = [v for v in EQUAL_LOGIT_VALUES[dtype] if abs(v) / temperature < largest]
    logits = torch.tensor(values, dtype=torch.float64)[:, None].expand(-1, k).to(dtype)
    rows = logits.shape[0]
    actions = torch.arange(rows) % k
    leaf = logits.clone().requires_grad_(True)
    log_prob, entropy = token_terms(backend, leaf, actions, temperature=temperature)
    cot_lp = torch.linspace(0.5, 2.0, rows, dtype=out_dtype(dtype))
    cot_h = torch.linspace(-1.0, 1.0, rows, dtype=out_dtype(dtype))
    (grad,) = torch.autograd.grad((log_prob, entropy), leaf, (cot_lp, cot_h))
    tol = value_tol(dtype)
    for r in range(rows):
        what = f"{logits[r, 0].item():g} repeated {k} times, T = {temperature}"
        torch.testing.assert_close(entropy[r].double(), torch.tensor(math.log(k), dtype=torch.float64), **tol,
                                   msg=lambda m: f"entropy of {what}: {m}")
        torch.testing.assert_close(log_prob[r].double(), torch.tensor(-math.log(k), dtype=torch.float64), **tol,
                                   msg=lambda m: f"log_prob of {what}: {m}")
        # d/dx_j = (1/T) (-g_a / K + g_a [j = a]): log p_j + h = 0 for the uniform distribution.
        want = torch.full((k,), -cot_lp[r].item() / k, dtype=torch.float64)
        want[actions[r]] += cot_lp[r].item()
        torch.testing.assert_close(grad[r].double(), want / temperature, **GRAD_TOLERANCES[dtype],
                                   msg=lambda m: f"gradient of {what}: {m}")


# --------------------------------------------------------------------------------------
# -inf logits
# --------------------------------------------------------------------------------------


def with_impossible_actions(rows, k, dtype, fully_impossible_rows=(), frac=0.4):
    logits = random_logits(rows, k)
    impossible = torch.rand(rows, k) < frac
    impossible[:, 0] = False  # at least one possible action per row, but the fully -inf rows
    logits = logits.masked_fill(impossible, -INF)
    for r in fully_impossible_rows:
        logits[r] = -INF
    return logits.to(dtype)


@pytest.mark.parametrize("k", [2, 7, 33, 100])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_neg_inf_logits_have_probability_0_and_gradient_exactly_0(backend, dtype, k):
    logits = with_impossible_actions(ROWS, k, dtype)
    impossible = logits == -INF
    # Half the taken actions impossible ones, where there are any: log_prob -inf.
    actions = random_actions((ROWS,), k)
    for r in range(0, ROWS, 2):
        if impossible[r].any():
            actions[r] = int(impossible[r].nonzero()[0])
    lp, h, grad = check_against_oracle(backend, logits, actions)
    taken_impossible = impossible.gather(1, actions[:, None]).squeeze(1)
    assert taken_impossible.any()
    assert (lp[taken_impossible] == -INF).all()
    assert torch.isfinite(lp[~taken_impossible]).all() and torch.isfinite(h).all()
    assert (grad[impossible] == 0).all(), "a -inf logit got a nonzero gradient"
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("k", [7, 100])
def test_the_entropy_of_finite_logits_is_that_of_the_possible_actions_alone(backend, k):
    logits = with_impossible_actions(5, k, torch.float64)
    _, h = token_terms(backend, logits)
    for r in range(5):
        possible = logits[r][logits[r] != -INF]
        torch.testing.assert_close(h[r], torch.distributions.Categorical(logits=possible).entropy(),
                                   **value_tol(torch.float64))


@pytest.mark.parametrize("k", [1, 7, 33, 100])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fully_neg_inf_rows_have_entropy_0_log_prob_neg_inf_and_gradient_0(backend, dtype, k):
    rows = (0, 3, 6)
    logits = with_impossible_actions(7, k, dtype, fully_impossible_rows=rows)
    lp, h, grad = check_against_oracle(backend, logits, random_actions((7,), k))
    rows = list(rows)
    assert (h[rows] == 0).all() and (lp[rows] == -INF).all()
    assert (grad[rows] == 0).all()
    assert torch.isfinite(grad).all()
    # Entropy alone: still 0 and gradient 0.
    _, h_alone, grad_alone = check_against_oracle(backend, logits, None)
    assert (h_alone[rows] == 0).all() and (grad_alone[rows] == 0).all()


def test_a_single_action_has_log_prob_0_entropy_0_and_gradient_0(backend):
    logits = random_logits(ROWS, 1, dtype=torch.float32)
    lp, h, grad = check_against_oracle(backend, logits, torch.zeros(ROWS, dtype=torch.long))
    assert (lp == 0).all() and (h == 0).all() and (grad == 0).all()


# --------------------------------------------------------------------------------------
# The mask
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [7, 33, 100])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masked_rows_holding_nan_and_garbage_actions_give_exactly_0_and_no_nan(backend, dtype, k):
    logits = random_logits(ROWS, k, dtype=dtype)
    mask = torch.rand(ROWS) < 0.6
    mask[0], mask[1] = False, True
    logits[~mask] = NAN
    logits[~mask & (torch.arange(ROWS) % 2 == 0)] = -INF  # some padding is -inf, some NaN
    logits[0, 0] = INF  # and +inf
    actions = random_actions((ROWS,), k)
    actions[~mask] = torch.tensor([-100, k, 2 ** 40])[torch.arange(int((~mask).sum())) % 3]
    lp, h, grad = check_against_oracle(backend, logits, actions, mask)
    assert (lp[~mask] == 0).all() and (h[~mask] == 0).all()
    assert (grad[~mask] == 0).all()
    assert not lp.isnan().any() and not h.isnan().any() and not grad.isnan().any()
    assert (grad[mask] != 0).any()


@pytest.mark.parametrize("k", [7, 100])
def test_masked_rows_with_int32_garbage_actions_are_not_read(backend, k):
    logits = random_logits(4, 5, k, dtype=torch.float32)
    mask = torch.rand(4, 5) < 0.5
    actions = random_actions((4, 5), k, torch.int32).masked_fill(~mask, -100)
    check_against_oracle(backend, logits, actions, mask)


@pytest.mark.parametrize("with_actions", [True, False], ids=["actions", "no-actions"])
def test_a_fully_masked_batch_gives_zeros_and_zero_gradient(backend, with_actions):
    logits = torch.full((3, 4, 9), NAN)
    actions = torch.full((3, 4), -100) if with_actions else None
    mask = torch.zeros(3, 4, dtype=torch.bool)
    lp, h, grad = check_against_oracle(backend, logits, actions, mask)
    assert (h == 0).all() and (grad == 0).all()
    assert lp is None or (lp == 0).all()


@pytest.mark.parametrize("k", [7, 100])
def test_an_all_true_mask_gives_bitwise_the_unmasked_results(backend, k):
    logits = random_logits(ROWS, k, dtype=torch.float32)
    actions = random_actions((ROWS,), k)
    lp, h, grad = check_against_oracle(backend, logits, actions, torch.ones(ROWS, dtype=torch.bool))
    lp0, h0, _ = check_against_oracle(backend, logits, actions, None)
    assert torch.equal(lp, lp0) and torch.equal(h, h0)


@pytest.mark.parametrize("lead", [(0,), (2, 0), (0, 3)], ids=str)
@pytest.mark.parametrize("k", [1, 7, 100])
def test_an_empty_leading_dim_gives_empty_outputs_and_gradient(backend, lead, k):
    logits = random_logits(*lead, k, dtype=torch.float32).requires_grad_(True)
    lp, h = token_terms(backend, logits, random_actions(lead, k), torch.ones(lead, dtype=torch.bool))
    assert lp.shape == h.shape == lead and lp.dtype == h.dtype == torch.float32
    (grad,) = torch.autograd.grad(lp.sum() + h.sum(), logits)
    assert grad.shape == logits.shape


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def _logits():
    return torch.randn(2, 3, 5)


def _actions(**changes):
    actions = torch.zeros(2, 3, dtype=torch.long)
    for (i, j), value in changes.get("at", {}).items():
        actions[i, j] = value
    return actions


ERRORS = {
    "integer-logits": (lambda: (_logits().long(), _actions(), None, 1.0), TypeError, r"logits.*floating"),
    "bool-logits": (lambda: (_logits() > 0, None, None, 1.0), TypeError, r"logits.*floating"),
    "float-actions": (lambda: (_logits(), _actions().float(), None, 1.0), TypeError, r"actions.*int64 or int32"),
    "int16-actions": (lambda: (_logits(), _actions().short(), None, 1.0), TypeError, r"actions.*int64 or int32"),
    "uint8-mask": (lambda: (_logits(), _actions(), torch.ones(2, 3, dtype=torch.uint8), 1.0), TypeError,
                   r"mask.*bool"),
    "float-mask": (lambda: (_logits(), None, torch.ones(2, 3), 1.0), TypeError, r"mask.*bool"),
    "actions-of-another-shape": (lambda: (_logits(), _actions()[:, :2], None, 1.0), ValueError,
                                 r"actions.*leading shape"),
    "flattened-actions": (lambda: (_logits(), _actions().reshape(6), None, 1.0), ValueError,
                          r"actions.*leading shape"),
    "actions-with-a-trailing-1": (lambda: (_logits(), _actions()[..., None], None, 1.0), ValueError,
                                  r"actions.*leading shape"),
    "mask-of-another-shape": (lambda: (_logits(), _actions(), torch.ones(1, 3, dtype=torch.bool), 1.0), ValueError,
                              r"mask.*leading shape"),
    "mask-of-the-logits-shape": (lambda: (_logits(), None, torch.ones(2, 3, 5, dtype=torch.bool), 1.0), ValueError,
                                 r"mask.*leading shape"),
    "k-0": (lambda: (torch.randn(2, 3, 0), _actions(), None, 1.0), ValueError, r"logits.*K = 0"),
    "k-0-no-actions": (lambda: (torch.randn(4, 0), None, None, 1.0), ValueError, r"logits.*K = 0"),
    "0-dim-logits": (lambda: (torch.tensor(1.0), None, None, 1.0), ValueError, r"logits.*0-dim"),
    "temperature-0": (lambda: (_logits(), _actions(), None, 0.0), ValueError, r"temperature.*got 0"),
    "temperature-negative": (lambda: (_logits(), _actions(), None, -1.0), ValueError, r"temperature.*got -1"),
    "temperature-nan": (lambda: (_logits(), _actions(), None, NAN), ValueError, r"temperature.*got nan"),
    "temperature-inf": (lambda: (_logits(), _actions(), None, INF), ValueError, r"temperature.*got inf"),
    "temperature-neg-inf": (lambda: (_logits(), _actions(), None, -INF), ValueError, r"temperature.*got -inf"),
    "action-k": (lambda: (_logits(), _actions(at={(1, 2): 5}), None, 1.0), IndexError,
                 r"actions\[1, 2\] = 5 is outside \[0, 5\)"),
    "action-9": (lambda: (_logits(), _actions(at={(1, 2): 9}), None, 1.0), IndexError,
                 r"actions\[1, 2\] = 9 is outside \[0, 5\)"),
    "action-negative": (lambda: (_logits(), _actions(at={(0, 1): -1}), None, 1.0), IndexError,
                        r"actions\[0, 1\] = -1 is outside \[0, 5\)"),
    "int32-action-out-of-range": (lambda: (_logits(), _actions(at={(1, 0): 7}).int(), None, 1.0), IndexError,
                                  r"actions\[1, 0\] = 7"),
    "out-of-range-action-in-a-kept-row": (
        lambda: (_logits(), _actions(at={(0, 0): -100, (1, 1): 6}), torch.tensor([[False, True, True]] * 2), 1.0),
        IndexError, r"actions\[1, 1\] = 6"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_invalid_arguments_raise_naming_the_argument(case):
    make_args, error, message = ERRORS[case]
    logits, actions, mask, temperature = make_args()
    with pytest.raises(error, match=message):
        hee.log_prob_and_entropy(logits, actions, mask, temperature)
    # The compiled op raises the same.
    with pytest.raises(error, match=message):
        FORWARD_OP(logits, actions, mask, temperature)


@pytest.mark.parametrize("name", ["logits", "actions", "mask", "action_mask"])
def test_an_argument_that_is_not_a_tensor_is_a_type_error_naming_it(name):
    arguments = dict(logits=_logits(), actions=_actions(), mask=None, action_mask=None)
    arguments[name] = [[0, 1, 2]] * 2
    expected = "a Tensor" if name == "logits" else "a Tensor or None"
    with pytest.raises(TypeError, match=rf"log_prob_and_entropy: {name}: expected {expected}, got list"):
        hee.log_prob_and_entropy(**arguments)


def test_logits_none_is_a_type_error():
    with pytest.raises(TypeError, match=r"log_prob_and_entropy: logits: expected a Tensor, got NoneType"):
        hee.log_prob_and_entropy(None)


def test_double_backward_raises():
    logits = _logits().requires_grad_()
    _, entropy = hee.log_prob_and_entropy(logits)
    (grad,) = torch.autograd.grad(entropy.sum(), logits, create_graph=True)
    with pytest.raises(RuntimeError, match=r"derivative for .* is not implemented"):
        grad.sum().backward()


def test_an_out_of_range_action_raises_whatever_the_isa_and_k(cpu_isa):
    for k in (7, 100):
        actions = torch.zeros(40, dtype=torch.long)
        actions[37] = k
        with pytest.raises(IndexError, match=rf"actions\[37\] = {k} is outside \[0, {k}\)"):
            hee.log_prob_and_entropy(torch.randn(40, k), actions)


def test_1_dim_logits_take_a_0_dim_action():
    logits = torch.randn(6, dtype=torch.float64)
    lp, h = hee.log_prob_and_entropy(logits, torch.tensor(4))
    assert lp.shape == h.shape == ()
    want_lp, want_h = token_terms_oracle(logits, torch.tensor(4))
    torch.testing.assert_close(lp, want_lp)
    torch.testing.assert_close(h, want_h)
    with pytest.raises(IndexError, match=r"actions\[\] = 6 is outside \[0, 6\)"):
        hee.log_prob_and_entropy(logits, torch.tensor(6))


# --------------------------------------------------------------------------------------
# Memory: what is saved for backward
# --------------------------------------------------------------------------------------


def same_tensor(a, b):
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


@pytest.mark.parametrize("case", ["actions-and-mask", "actions", "entropy-only", "transposed-bfloat16"])
def test_only_the_inputs_and_o_of_rows_statistics_are_saved_for_backward(case):
    n, k = 512, 300
    logits = torch.randn(k, n).t() if case == "transposed-bfloat16" else torch.randn(n, k)
    if case == "transposed-bfloat16":
        logits = logits.to(torch.bfloat16)
    logits.requires_grad_(True)
    actions = None if case == "entropy-only" else torch.randint(0, k, (n,))
    mask = torch.rand(n) < 0.9 if case == "actions-and-mask" else None
    packed = []

    def pack(t):
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp, h = hee.log_prob_and_entropy(logits, actions, mask)
    assert packed, "nothing saved: the backward could not be exact"
    inputs = [t for t in (logits, actions, mask) if t is not None]
    for t in packed:
        if any(same_tensor(t, x) for x in inputs):
            continue
        assert t.numel() <= 3 * n, f"saved a new tensor of shape {tuple(t.shape)}"
    assert any(same_tensor(t, logits) for t in packed)
    # And the backward from them is right.
    (grad,) = torch.autograd.grad(h.sum() if lp is None else lp.sum() + h.sum(), logits)
    assert grad.shape == logits.shape


# --------------------------------------------------------------------------------------
# Determinism, threads, CPU builds
# --------------------------------------------------------------------------------------


def outputs_and_grad(logits, actions, mask, temperature=1.0):
    leaf = logits.detach().clone().requires_grad_(True)
    lp, h = hee.log_prob_and_entropy(leaf, actions, mask, temperature)
    (grad,) = torch.autograd.grad((lp, h), leaf, (torch.linspace(-1, 1, lp.numel()).reshape(lp.shape),
                                                  torch.linspace(2, -1, h.numel()).reshape(h.shape)))
    return lp.detach(), h.detach(), grad


def assert_bitwise_equal(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("k", [7, 33, 1000])
def test_same_inputs_give_bitwise_the_same_outputs_and_gradient(cpu_isa, k):
    logits = random_logits(300, k, dtype=torch.float32)
    actions = random_actions((300,), k)
    mask = torch.rand(300) < 0.9
    assert_bitwise_equal(outputs_and_grad(logits, actions, mask, 0.7), outputs_and_grad(logits, actions, mask, 0.7))


@pytest.mark.parametrize("k", [7, 33, 1000])
def test_one_thread_and_two_give_bitwise_the_same_outputs_and_gradient(cpu_isa, k):
    # At least two of the CPU's chunks (about 32768 elements each) for every k.
    rows = 16384 if k < 1000 else 512
    logits = random_logits(rows, k, dtype=torch.float32)
    actions = random_actions((rows,), k)
    mask = torch.rand(rows) < 0.9
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = outputs_and_grad(logits, actions, mask)
        torch.set_num_threads(2)
        two = outputs_and_grad(logits, actions, mask)
    finally:
        torch.set_num_threads(previous)
    assert_bitwise_equal(one, two)


@pytest.mark.skipif(len(SUPPORTED_CPU_ISAS) < 2, reason="one CPU build only")
@pytest.mark.parametrize("k", [7, 100])
def test_every_cpu_build_gives_the_widest_builds_results_within_float32_roundoff(k):
    logits = random_logits(ROWS, k, dtype=torch.float32)
    actions = random_actions((ROWS,), k)
    results = {}
    for isa in SUPPORTED_CPU_ISAS:
        with forced_cpu_isa(isa):
            results[isa] = outputs_and_grad(logits, actions, None)
    widest = results[SUPPORTED_CPU_ISAS[-1]]
    for isa, (lp, h, grad) in results.items():
        torch.testing.assert_close(lp, widest[0], **VALUE_TOLERANCES[torch.float32], msg=isa)
        torch.testing.assert_close(h, widest[1], **VALUE_TOLERANCES[torch.float32], msg=isa)
        torch.testing.assert_close(grad, widest[2], **GRAD_TOLERANCES[torch.float32], msg=isa)


# --------------------------------------------------------------------------------------
# torch.library.opcheck: forward and backward ops
# --------------------------------------------------------------------------------------


def forward_args(requires_grad=True, actions="int64", mask=True, dtype=torch.float32, temperature=0.8, k=7,
                 lead=(3, 4)):
    logits = random_logits(*lead, k, dtype=dtype).requires_grad_(requires_grad)
    acts = None if actions is None else random_actions(lead, k, getattr(torch, actions))
    m = (torch.rand(lead) < 0.7) if mask else None
    return logits, acts, m, temperature


# (actions, mask): int64 and int32 actions and none; a mask and none.
ACTIONS_AND_MASK = [("int64", True), ("int32", False), (None, True), (None, False)]
ACTIONS_AND_MASK_IDS = ["int64-mask", "int32-no-mask", "no-actions-mask", "no-actions-no-mask"]


@pytest.mark.parametrize("actions, mask", ACTIONS_AND_MASK, ids=ACTIONS_AND_MASK_IDS)
@pytest.mark.parametrize("requires_grad", [True, False], ids=["requires-grad", "no-grad"])
def test_forward_op_passes_opcheck(requires_grad, actions, mask):
    assert_opcheck_passes(FORWARD_OP, forward_args(requires_grad, actions, mask))


@pytest.mark.parametrize("case", ["float64", "bfloat16-k-100", "1-dim-logits", "transposed-logits"])
def test_forward_op_passes_opcheck_for_other_dtypes_and_layouts(case):
    if case == "float64":
        args = forward_args(dtype=torch.float64)
    elif case == "bfloat16-k-100":
        args = forward_args(dtype=torch.bfloat16, k=100)
    elif case == "1-dim-logits":
        args = forward_args(lead=())
    else:
        logits = random_logits(7, 6).float().t().requires_grad_(True)
        args = (logits, random_actions((6,), 7), None, 1.0)
    assert_opcheck_passes(FORWARD_OP, args)


def backward_args(grads, actions="int64", mask=True, dtype=torch.float32, temperature=0.8, k=7):
    logits, acts, m, t = forward_args(False, actions, mask, dtype, temperature, k)
    lp, h, row_stats = FORWARD_OP(logits, acts, m, t)
    grad_lp = torch.randn_like(h) if "log_prob" in grads and acts is not None else None
    grad_h = torch.randn_like(h) if "entropy" in grads else None
    return grad_lp, grad_h, logits, acts, m, row_stats, t


@pytest.mark.parametrize("actions, mask", [("int64", True), ("int32", False)], ids=["int64-mask", "int32-no-mask"])
@pytest.mark.parametrize("grads", [("log_prob",), ("entropy",), ("log_prob", "entropy")], ids="+".join)
def test_backward_op_passes_opcheck(grads, actions, mask):
    assert_opcheck_passes(BACKWARD_OP, backward_args(grads, actions, mask))


@pytest.mark.parametrize("mask", [True, False], ids=["mask", "no-mask"])
def test_backward_op_passes_opcheck_without_actions(mask):
    assert_opcheck_passes(BACKWARD_OP, backward_args(("entropy",), actions=None, mask=mask))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_backward_op_passes_opcheck_for_other_dtypes(dtype):
    assert_opcheck_passes(BACKWARD_OP, backward_args(("log_prob", "entropy"), dtype=dtype, k=33))


# --------------------------------------------------------------------------------------
# The pure-PyTorch reference, against the same oracle
# --------------------------------------------------------------------------------------


REFERENCE_CASES = ["plain", "mask-with-nan-padding", "neg-inf-logits", "fully-neg-inf-rows", "temperature",
                   "no-actions", "int32-actions", "3-d"]


def reference_case(case, k):
    logits = random_logits(ROWS, k)
    actions = random_actions((ROWS,), k)
    mask, temperature = None, 1.0
    if case == "mask-with-nan-padding":
        mask = torch.rand(ROWS) < 0.7
        logits[~mask] = NAN
        actions[~mask] = -100
    elif case == "neg-inf-logits":
        logits = with_impossible_actions(ROWS, k, torch.float64)
        for r in range(0, ROWS, 3):  # some taken actions impossible: log_prob -inf
            if (logits[r] == -INF).any():
                actions[r] = int((logits[r] == -INF).nonzero()[0])
    elif case == "fully-neg-inf-rows":
        logits = with_impossible_actions(ROWS, k, torch.float64, fully_impossible_rows=(0, 5))
    elif case == "temperature":
        temperature = 0.6
    elif case == "no-actions":
        actions = None
    elif case == "int32-actions":
        actions = actions.int()
    elif case == "3-d":
        logits = logits[:36].reshape(4, 9, k)
        actions = actions[:36].reshape(4, 9)
    return logits, actions, mask, temperature


@pytest.mark.parametrize("k", [1, 7, 100])
@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_the_reference_matches_the_oracle_in_float64(case, k):
    logits, actions, mask, temperature = reference_case(case, k)
    leaf = logits.clone().requires_grad_(True)
    oracle_leaf = logits.clone().requires_grad_(True)
    got = hee.reference.log_prob_and_entropy(leaf, actions, mask, temperature)
    want = token_terms_oracle(oracle_leaf, actions, mask, temperature)
    for name, g, w in zip(("log_prob", "entropy"), got, want):
        if w is None:
            assert g is None
            continue
        assert g.dtype == torch.float64
        torch.testing.assert_close(g, w, **VALUE_TOLERANCES[torch.float64], msg=lambda m: f"{name}: {m}")
    cot = [None if w is None else torch.randn_like(w) for w in want]
    got_grad = grads_of(got, cot, leaf)
    want_grad = grads_of(want, cot, oracle_leaf)
    torch.testing.assert_close(got_grad, want_grad, **GRAD_TOLERANCES[torch.float64])
    assert not got_grad.isnan().any()


def test_the_reference_gives_float32_for_half_logits_and_raises_as_the_op():
    logits = random_logits(5, 7, dtype=torch.bfloat16)
    lp, h = hee.reference.log_prob_and_entropy(logits, random_actions((5,), 7))
    assert lp.dtype == h.dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        hee.reference.log_prob_and_entropy(logits, None, None, 0.0)
    with pytest.raises(IndexError):
        hee.reference.log_prob_and_entropy(logits, torch.full((5,), 7))


# Rows longer than the CUDA kernels hold in a warp group (a block per row, forward and
# backward), an odd length, and a slice whose rows start off a 16-byte boundary (peeled).
@pytest.mark.parametrize("k", [1025, 4099])
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_long_rows_match_the_oracle(backend, dtype, k):
    logits = random_logits(5, k + 3, dtype=dtype)[:, 3:]
    mask = torch.tensor([True, True, False, True, True])
    logits[~mask] = NAN
    check_against_oracle(backend, logits, random_actions((5,), k).masked_fill(~mask, -100), mask, temperature=0.8)


# 1 / T within [1 / sqrt(max), sqrt(max)] of the accumulation dtype (float32: about
# 5.4e-20 to 1.8e19): its products with log p and the upstream gradients stay finite.
@pytest.mark.parametrize(
    "temperature, match",
    [(1e-39, "too small"), (1e-20, "too small"), (1e20, "too large"), (1e46, "too large")],
)
def test_a_temperature_outside_the_float32_range_is_rejected(temperature, match):
    with pytest.raises(ValueError, match=re.escape(f"temperature {temperature:g} is {match}: 1 / temperature must be")):
        hee.log_prob_and_entropy(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), None, temperature)


def test_a_float32_rejected_temperature_is_accepted_for_float64_logits():
    for temperature in (1e-39, 1e46):
        _, entropy = hee.log_prob_and_entropy(torch.randn(3, 4, dtype=torch.float64), None, None, temperature)
        assert torch.isfinite(entropy).all()


@pytest.mark.parametrize("temperature", [1e-19, 1e19], ids=["smallest", "largest"])
def test_the_extreme_accepted_temperatures_keep_ruled_out_actions_at_zero_gradient(temperature):
    # -inf logits times 1 / T, and their log p times 1 / T and the upstream gradients:
    # NaN when 1 / T was 0 or the products overflowed.
    logits = torch.tensor([[0.0, float("-inf"), 1.0, 2.0]], requires_grad=True)
    log_prob, entropy = hee.log_prob_and_entropy(logits, torch.tensor([2]), None, temperature)
    (log_prob.sum() + 10.0 * entropy.sum()).backward()
    assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 1].item() == 0.0
