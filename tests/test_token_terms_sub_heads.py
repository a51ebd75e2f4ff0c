"""``hee.log_prob_and_entropy(..., discrete_sizes=[K_1, ..., K_H])``: the logits' columns are
H sub-heads, each its own categorical (SB3's ``MultiDiscrete`` layout); actions are
``[..., H]``, and each row's log-probability and entropy are the sums of its sub-heads', as
SB3's ``MultiCategoricalDistribution`` gives them (the op's docstring, docs/design.md
"Sub-heads").

Values and gradients are held, sub-head by sub-head, to the float64 ``Categorical`` oracle of
tests/oracle.py (``token_terms_oracle`` of each ``torch.split`` of the logits, summed). The
oracle tests run once per CPU kernel build and once on CUDA (the ``backend`` fixture; the CUDA
cases are skipped without a GPU, and tests/test_cuda_emulated.py runs the CUDA kernels' sub-heads
on the host emulation against the CPU op); the other kernel tests once per CPU build.
"""

import pytest
import torch

import hybrid_entropy_ext as hee
from hybrid_entropy_ext import reference
from common_utils import run_on
from oracle import token_terms_oracle
from token_terms_checks import (DTYPES, FORWARD_OP, BACKWARD_OP, NAN, ROWS, assert_grad_close,
                                assert_opcheck_passes, grads_of, out_dtype, random_logits, ruled_out_as_neg_inf,
                                value_tol)

# One column, sub-heads in SIMD lanes (K_h <= 32) and along them (K_h > 32), SB3-style mixes.
SIZES = ([1, 1], [4, 4, 4, 4], [3, 5, 2], [2, 40], [33, 1, 7], [16])


def random_head_actions(lead, sizes, dtype=torch.int64):
    """``[*lead, H]``: sub-head h's action drawn in ``[0, K_h)``."""
    return torch.stack([torch.randint(0, k, tuple(lead)) for k in sizes], dim=-1).to(dtype)


def multi_categorical_oracle(logits, actions, sizes, mask=None, temperature=1.0):
    """``(log_prob, entropy)`` summed over the sub-heads' float64 oracles; differentiable."""
    heads = [
        token_terms_oracle(head_logits, None if actions is None else actions[..., h], mask, temperature)
        for h, head_logits in enumerate(logits.split(sizes, dim=-1))
    ]
    entropy = sum(h for _, h in heads)
    return (None if actions is None else sum(lp for lp, _ in heads)), entropy


def check_against_oracle(device, logits, actions, sizes, mask=None, temperature=1.0, action_mask=None):
    """The op against the oracle (given the ``-inf`` form of an action mask)."""
    dtype = logits.dtype
    leaf = logits.detach().clone().requires_grad_(True)
    oracle_leaf = logits.detach().double().requires_grad_(True)
    got_lp, got_h = run_on(device, hee.log_prob_and_entropy, leaf, actions, mask, temperature,
                           action_mask=action_mask, discrete_sizes=sizes)
    want_lp, want_h = multi_categorical_oracle(
        ruled_out_as_neg_inf(oracle_leaf, action_mask), actions, sizes, mask, temperature)

    lead = logits.shape[:-1]
    assert got_h.dtype == out_dtype(dtype) and got_h.shape == lead
    assert got_lp.dtype == out_dtype(dtype) and got_lp.shape == lead
    # A sum of H heads' values: each head's rounding, so H times one head's tolerance.
    tol = {name: len(sizes) * value for name, value in value_tol(dtype).items()}
    torch.testing.assert_close(got_h.double(), want_h.detach(), **tol, msg=lambda m: f"entropy: {m}")
    torch.testing.assert_close(got_lp.double(), want_lp.detach(), **tol, msg=lambda m: f"log_prob: {m}")

    cot_lp, cot_h = torch.randn(lead, dtype=out_dtype(dtype)), torch.randn(lead, dtype=out_dtype(dtype))
    got_grad = grads_of((got_lp, got_h), (cot_lp, cot_h), leaf)
    want_grad = grads_of((want_lp, want_h), (cot_lp.double(), cot_h.double()), oracle_leaf)
    assert got_grad.dtype == dtype and got_grad.shape == logits.shape
    # Each sub-head's columns hold its own categorical's gradient for the shared upstream
    # gradients: the one-head tolerance model applies head by head.
    first = 0
    for k in sizes:
        columns = slice(first, first + k)
        assert_grad_close(got_grad[..., columns], want_grad[..., columns],
                          ruled_out_as_neg_inf(logits, action_mask)[..., columns], mask, temperature, cot_lp, cot_h)
        first += k
    return got_lp.detach(), got_h.detach()


@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_and_gradients_are_the_sums_of_the_sub_heads_categoricals(backend, dtype, sizes):
    logits = random_logits(ROWS, sum(sizes), dtype=dtype)
    check_against_oracle(backend, logits, random_head_actions((ROWS,), sizes), sizes)


@pytest.mark.parametrize("sizes", [[3, 5, 2], [2, 40]], ids=str)
def test_masked_rows_holding_nan_give_zero_and_zero_gradient(backend, sizes):
    logits = random_logits(4, 9, sum(sizes), dtype=torch.float32)
    mask = torch.rand(4, 9) < 0.6
    logits[~mask] = NAN
    actions = random_head_actions((4, 9), sizes)
    actions[~mask] = -7  # padding's actions are not read either
    check_against_oracle(backend, logits, actions, sizes, mask=mask)


def test_temperature_tempers_every_sub_head(backend):
    sizes = [3, 5, 2]
    check_against_oracle(backend, random_logits(ROWS, 10, dtype=torch.float32), random_head_actions((ROWS,), sizes), sizes,
                         temperature=0.7)


def test_int32_actions_give_the_int64_results(cpu_isa):
    sizes = [3, 5, 2]
    logits = random_logits(ROWS, 10, dtype=torch.float32)
    actions = random_head_actions((ROWS,), sizes)
    want = hee.log_prob_and_entropy(logits, actions, discrete_sizes=sizes)
    got = hee.log_prob_and_entropy(logits, actions.int(), discrete_sizes=sizes)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_entropy_alone_needs_no_actions(cpu_isa):
    sizes = [4, 4, 4, 4]
    logits = random_logits(ROWS, 16, dtype=torch.float64)
    log_prob, entropy = hee.log_prob_and_entropy(logits, discrete_sizes=sizes)
    _, want = multi_categorical_oracle(logits, None, sizes)
    assert log_prob is None
    torch.testing.assert_close(entropy, want, **value_tol(torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_one_sub_head_is_bitwise_the_op_without_sub_heads(cpu_isa, dtype):
    logits = random_logits(ROWS, 19, dtype=dtype)
    actions = torch.randint(0, 19, (ROWS,))
    cot_lp, cot_h = torch.randn(ROWS), torch.randn(ROWS)

    def values_and_grad(**kwargs):
        leaf = logits.clone().requires_grad_(True)
        lp, h = hee.log_prob_and_entropy(leaf, **kwargs)
        (grad,) = torch.autograd.grad([lp, h], leaf, [cot_lp, cot_h])
        return lp.detach(), h.detach(), grad

    want = values_and_grad(actions=actions)
    got = values_and_grad(actions=actions[:, None], discrete_sizes=[19])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_an_action_mask_rules_out_actions_within_each_sub_head(backend, dtype):
    # Random taken actions: some are ruled out, so that sub-head's log-probability is -inf
    # (the row's sum too) and its taken logit gets no term of its own.
    sizes = [3, 5, 2]
    allowed = torch.rand(ROWS, 10) < 0.7
    allowed[:, [0, 3, 8]] = True  # no sub-head rules out everything in these rows
    allowed[5, 3:8] = False  # but here sub-head 1 does: entropy 0, log_prob -inf
    got_lp, _ = check_against_oracle(backend, random_logits(ROWS, 10, dtype=dtype), random_head_actions((ROWS,), sizes),
                                     sizes, action_mask=allowed)
    assert torch.isneginf(got_lp).any() and torch.isfinite(got_lp).any()


def test_the_reference_gives_the_op_s_values_and_gradients():
    sizes = [33, 1, 7]
    logits = random_logits(5, 6, 41, dtype=torch.float64)
    actions = random_head_actions((5, 6), sizes)
    mask = torch.rand(5, 6) < 0.8
    cot_lp, cot_h = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    results = []
    for fn in (hee.log_prob_and_entropy, reference.log_prob_and_entropy):
        leaf = logits.clone().requires_grad_(True)
        lp, h = fn(leaf, actions, mask, 1.0, None, sizes)
        results.append((lp, h, grads_of((lp, h), (cot_lp, cot_h), leaf)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "sizes, message",
    [([3, 5, 3], "sum to 11, but the logits have K = 10"), ([10, 0], "must be positive"),
     ([], "at least one sub-head")],
    ids=["wrong sum", "zero size", "empty"],
)
def test_bad_sizes_are_a_value_error_naming_them(sizes, message):
    with pytest.raises(ValueError, match=message):
        hee.log_prob_and_entropy(torch.randn(4, 10), discrete_sizes=sizes)


def test_actions_without_a_sub_head_dim_are_a_value_error():
    with pytest.raises(ValueError, match=r"actions must be \[\.\.\., H\]"):
        hee.log_prob_and_entropy(torch.randn(4, 10), torch.zeros(4, dtype=torch.long), discrete_sizes=[3, 5, 2])


def test_an_action_outside_its_sub_head_is_an_index_error_naming_row_and_head(cpu_isa):
    actions = torch.zeros(4, 3, dtype=torch.long)
    actions[2, 1] = 5  # sub-head 1 has 5 actions: 0..4
    with pytest.raises(IndexError, match=r"actions\[2, 1\] = 5 is outside \[0, 5\) \(sub-head 1 has K_h = 5"):
        hee.log_prob_and_entropy(torch.randn(4, 10), actions, discrete_sizes=[3, 5, 2])


# Rows past the first tiles of the check's bounds (16 rows of H actions), each sub-head, and
# values at both ends of int64.
@pytest.mark.parametrize("row, head, value", [
    (0, 0, 3), (17, 2, 2), (52, 1, -1), (40, 0, 2**63 - 1), (33, 2, -2**63), (21, 1, 2**62)])
def test_an_action_outside_its_sub_head_is_caught_in_any_row_by_both_passes(cpu_isa, row, head, value):
    sizes = [3, 5, 2]
    logits = random_logits(53, 10, dtype=torch.float32)
    actions = random_head_actions((53,), sizes)
    _, _, row_stats = FORWARD_OP(logits, actions, None, 1.0, None, sizes)
    actions[row, head] = value
    message = rf"actions\[{row}, {head}\] = {value} is outside \[0, {sizes[head]}\)"
    with pytest.raises(IndexError, match=message):
        FORWARD_OP(logits, actions, None, 1.0, None, sizes)
    with pytest.raises(IndexError, match=message):
        BACKWARD_OP(torch.ones(53), torch.ones(53), logits, actions, None, row_stats, 1.0, None, sizes)


def test_an_action_outside_its_sub_head_in_a_dropped_row_is_not_read(cpu_isa):
    sizes = [3, 5, 2]
    logits = random_logits(40, 10, dtype=torch.float32)
    actions = random_head_actions((40,), sizes)
    mask = torch.ones(40, dtype=torch.bool)
    mask[[5, 30]] = False
    actions[5, 0], actions[30, 2] = -7, 2**62
    log_prob, entropy, row_stats = FORWARD_OP(logits, actions, mask, 1.0, None, sizes)
    assert log_prob[[5, 30]].eq(0).all() and entropy[[5, 30]].eq(0).all()
    grad = BACKWARD_OP(torch.ones(40), torch.ones(40), logits, actions, mask, row_stats, 1.0, None, sizes)
    assert grad[[5, 30]].eq(0).all()
    actions[31, 1] = 5
    with pytest.raises(IndexError, match=r"actions\[31, 1\] = 5 is outside \[0, 5\)"):
        hee.log_prob_and_entropy(logits, actions, mask, discrete_sizes=sizes)


def test_opcheck_passes_with_sub_heads():
    sizes = [3, 5, 2]
    logits = random_logits(2, 7, 10, dtype=torch.float32).requires_grad_(True)
    actions = random_head_actions((2, 7), sizes)
    mask = torch.rand(2, 7) < 0.8
    assert_opcheck_passes(FORWARD_OP, (logits, actions, mask, 0.9, None, sizes))
    _, _, row_stats = FORWARD_OP(logits.detach(), actions, mask, 0.9, None, sizes)
    assert row_stats.shape == (3, 3 * 14)
    assert_opcheck_passes(
        BACKWARD_OP, (torch.randn(2, 7), torch.randn(2, 7), logits.detach(), actions, mask, row_stats, 0.9, None, sizes))


def test_compiled_call_gives_eager_values_and_gradients():
    sizes = [3, 5, 2]
    logits = random_logits(ROWS, 10, dtype=torch.float32)
    actions = random_head_actions((ROWS,), sizes)

    def step(logits):
        lp, h = hee.log_prob_and_entropy(logits, actions, discrete_sizes=sizes)
        return (lp * 0.5).sum() + h.sum()

    results = []
    for fn in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        leaf = logits.clone().requires_grad_(True)
        value = fn(leaf)
        results.append((value.detach(), torch.autograd.grad(value, leaf)[0]))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_scripted_wrapper_gives_eager_values_with_sub_heads():
    sizes = [3, 5, 2]
    scripted = torch.jit.script(hee.log_prob_and_entropy)
    logits = random_logits(3, 4, 10, dtype=torch.float64)
    actions = random_head_actions((3, 4), sizes)
    got = scripted(logits, actions, None, 1.3, None, sizes)
    want = hee.log_prob_and_entropy(logits, actions, None, 1.3, None, sizes)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


class SubHeadTerms(torch.nn.Module):
    def forward(self, logits, actions):
        return hee.log_prob_and_entropy(logits, actions, discrete_sizes=[3, 5, 2])


def test_exported_module_with_dynamic_batch_gives_eager_values_and_gradients():
    sizes = [3, 5, 2]
    batch = torch.export.Dim("batch", min=2, max=4096)
    exported = torch.export.export(
        SubHeadTerms(), (random_logits(8, 10, dtype=torch.float32), random_head_actions((8,), sizes)),
        dynamic_shapes={"logits": {0: batch}, "actions": {0: batch}},
    ).module()
    logits, actions = random_logits(21, 10, dtype=torch.float32), random_head_actions((21,), sizes)
    results = []
    for fn in (exported, SubHeadTerms()):
        leaf = logits.clone().requires_grad_(True)
        lp, h = fn(leaf, actions)
        results.append((lp.detach(), h.detach(), torch.autograd.grad(lp.sum() - 0.5 * h.sum(), leaf)[0]))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
