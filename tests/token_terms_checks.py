"""What the tests of ``hee.log_prob_and_entropy`` share: the ops, input makers, the call on a
device, and the checks against the float64 oracle of tests/oracle.py
(``token_terms_oracle``) with the error model of the gradient. Used by test_token_terms.py,
test_token_terms_action_mask.py and the emulated CUDA tests.

Tolerances are those of common_utils.py: values by the accumulation dtype
(``VALUE_TOLERANCES``: float64 for float64 logits, else float32), gradients by the input
dtype (``GRAD_TOLERANCES``: a 16-bit gradient is itself rounded to 8 or 11 bits). The oracle
gets the very values the op gets (16-bit inputs rounded first, then widened to float64), so
only the op's own arithmetic is measured.
"""

import math
from typing import Callable

import torch

import hybrid_entropy_ext as hee
from common_utils import GRAD_TOLERANCES, VALUE_TOLERANCES, acc_roundoff, run_on
from oracle import token_terms_oracle

FORWARD_OP = torch.ops.hybrid_entropy_ext.log_prob_and_entropy.default
BACKWARD_OP = torch.ops.hybrid_entropy_ext._log_prob_and_entropy_backward.default

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Rows: full 8- and 16-row tiles and a partial one.
ROWS = 37
INF = math.inf
NAN = math.nan


def out_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def value_tol(dtype):
    return VALUE_TOLERANCES[out_dtype(dtype)]


def random_logits(*shape, dtype=torch.float64, scale=2.0):
    """``scale * N(0, 1)`` drawn in float64 (global generator, seeded per test), rounded to
    ``dtype``."""
    return (scale * torch.randn(*shape, dtype=torch.float64)).to(dtype)


def random_actions(lead, k, dtype=torch.int64):
    return torch.randint(0, k, tuple(lead)).to(dtype)


def token_terms(device, logits, actions=None, mask=None, temperature=1.0, view: Callable = lambda t: t,
                action_mask=None):
    """``hee.log_prob_and_entropy`` on ``device``: CPU tensors in and out, differentiably;
    ``view`` is applied to the logits once they are on the device."""

    def call(logits, actions, mask, action_mask):
        return hee.log_prob_and_entropy(view(logits), actions, mask, temperature, action_mask)

    return run_on(device, call, logits, actions, mask, action_mask)


def ruled_out_as_neg_inf(logits, action_mask):
    """The logits with every action ``action_mask`` rules out set to ``-inf``: the form the
    op's docstring says an action mask is exactly (None: the logits)."""
    return logits if action_mask is None else logits.masked_fill(~action_mask, -INF)


def grads_of(outputs, cotangents, leaf):
    """d (sum_i <cotangent_i, output_i>) / d leaf, over the outputs that have a cotangent
    (None: that output is not differentiated; autograd gives the op no gradient for it)."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if c is not None]
    (grad,) = torch.autograd.grad([o for o, _ in pairs], leaf, [c for _, c in pairs])
    return grad


def check_against_oracle(device, logits, actions=None, mask=None, temperature=1.0, view=lambda t: t,
                         upstream=("log_prob", "entropy"), action_mask=None):
    """The op's outputs (dtype, shape, values) and the gradient of a random weighting of
    ``upstream`` w.r.t. the logits against the float64 oracle (given the ``-inf`` form of an
    action mask); returns what the op gave."""
    dtype = logits.dtype
    leaf = logits.detach().clone().requires_grad_(True)
    oracle_leaf = logits.detach().double().requires_grad_(True)

    got_lp, got_h = token_terms(device, leaf, actions, mask, temperature, view, action_mask)
    want_lp, want_h = token_terms_oracle(
        ruled_out_as_neg_inf(view(oracle_leaf), action_mask), actions, mask, temperature)

    lead = view(logits).shape[:-1]
    assert got_h.dtype == out_dtype(dtype) and got_h.shape == lead
    torch.testing.assert_close(got_h.double(), want_h.detach(), **value_tol(dtype), msg=lambda m: f"entropy: {m}")
    if actions is None:
        assert got_lp is None
    else:
        assert got_lp.dtype == out_dtype(dtype) and got_lp.shape == lead
        torch.testing.assert_close(got_lp.double(), want_lp.detach(), **value_tol(dtype),
                                   msg=lambda m: f"log_prob: {m}")
    assert not got_h.isnan().any()

    # Distinct random upstream gradients per row (a swapped or dropped one shows).
    cot_lp = torch.randn(lead, dtype=out_dtype(dtype)) if "log_prob" in upstream and actions is not None else None
    cot_h = torch.randn(lead, dtype=out_dtype(dtype)) if "entropy" in upstream else None
    if cot_lp is None and cot_h is None:
        return got_lp, got_h, None
    got_grad = grads_of((got_lp, got_h), (cot_lp, cot_h), leaf)
    want_grad = grads_of((want_lp, want_h), (None if cot_lp is None else cot_lp.double(),
                                             None if cot_h is None else cot_h.double()), oracle_leaf)
    assert got_grad.dtype == dtype and got_grad.shape == logits.shape
    assert not got_grad.isnan().any()
    assert_grad_close(got_grad, want_grad, ruled_out_as_neg_inf(view(logits), action_mask), mask, temperature,
                      cot_lp, cot_h, view=view)
    return got_lp, got_h, got_grad


def assert_grad_close(got, want, logits, mask, temperature, cot_lp, cot_h, view=lambda t: t):
    """|got - want| <= atol + rtol |want| + e_k elementwise, with GRAD_TOLERANCES[dtype] and
    e_k the accumulation's error in ``-p_k (g_a + g_h (log p_k + h)) / T``, modelled as
    entropy_tolerance is: ``4 u_acc (4 + sqrt(K)) p_k (|g_a| + |g_h| (1 + |log p_k| + |h|)) / T``
    (the term cancels where log p_k ~ -h, so a relative tolerance alone cannot hold).
    ``logits`` are the op's input (the view), ``got`` and ``want`` the gradients w.r.t. the
    leaf the view was taken of."""
    dtype = got.dtype
    k = logits.shape[-1]
    z = logits.double() / temperature
    if mask is not None:
        z = torch.where(mask[..., None], z, 0.0)
    p = torch.softmax(z, dim=-1).nan_to_num(0.0)  # a fully -inf row: NaN -> 0
    log_p = torch.where(p > 0, torch.log(p), 0.0)
    h = -(p * log_p).sum(-1, keepdim=True)
    g_a = 0.0 if cot_lp is None else cot_lp.double().abs()[..., None]
    g_h = 0.0 if cot_h is None else cot_h.double().abs()[..., None]
    model = 4 * acc_roundoff(dtype) * (4 + math.sqrt(k)) * p * (g_a + g_h * (1 + log_p.abs() + h)) / temperature
    # Back onto the leaf's layout: the view's elements are the leaf's (an expanded view
    # adds up its rows' errors, hence the sum).
    leaf = torch.zeros(want.shape, dtype=torch.float64, requires_grad=True)
    (error_model,) = torch.autograd.grad(view(leaf), leaf, model)
    tol = GRAD_TOLERANCES[dtype]
    bound = tol["atol"] + tol["rtol"] * want.abs() + error_model
    excess = (got.double() - want).abs() - bound
    if (excess > 0).any():
        worst = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape))
        raise AssertionError(
            f"gradient: {int((excess > 0).sum())} / {excess.numel()} elements out of tolerance; worst at "
            f"{worst}: got {got[worst].item()!r}, expected {want[worst].item()!r}, allowed "
            f"{bound[worst].item():.3g}")


def assert_opcheck_passes(op, args):
    results = torch.library.opcheck(op, args)
    assert results and all(status == "SUCCESS" for status in results.values()), results
