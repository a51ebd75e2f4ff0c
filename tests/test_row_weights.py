"""Row weights: the op's ``row_weights`` [B] make each batch mean a weighted mean.

``H = sum_i w_i h_i / sum_i w_i`` for the categorical head and for a per-sample
``[B, D]`` log_std (docs/design.md, "Row weights"); a shared ``[D]`` log_std's entropy
does not depend on them. The weights receive no gradient. Held to the float64
``torch.distributions`` oracle with the same weights (tests/oracle.py).
"""

import math

import pytest
import torch

import hybrid_entropy_ext  # noqa: F401  (registers the ops)
from common_utils import GRAD_TOLERANCES, SUPPORTED_CPU_ISAS, VALUE_TOLERANCES, forced_cpu_isa, random_heads
from oracle import KEYS, OUTPUT_WEIGHTS, categorical_entropies, distributions_oracle, normal_entropies

OP = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss
PARAMS = (1.0, 0.5, 10.0, 10.0, 3.0)  # thresholds high enough that both penalties are on


def weighted_loss(logits, log_std, weights, coeff=0.05):
    """The op's seven outputs with row weights, as a dict."""
    out = OP(logits, log_std, torch.tensor(coeff, dtype=torch.float64), *PARAMS, weights)
    return dict(zip(KEYS, out[:7]))


def weighted_sum_of_outputs(out):
    return sum(OUTPUT_WEIGHTS[key] * out[key] for key in KEYS)


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]


def random_weights(b, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(b, generator=gen, dtype=torch.float64)
    weights[::3] = 0.0
    return weights.to(dtype)


@pytest.mark.parametrize("heads", ["both", "logits", "log_std"])
def test_weighted_means_and_gradients_match_the_distributions_oracle_in_float64(heads):
    logits, log_std = random_heads(37, 6, 3, torch.float64)
    logits, log_std = leaves(logits if heads != "log_std" else None, log_std if heads != "logits" else None)
    weights = random_weights(37)
    got = weighted_loss(logits, log_std, weights)
    want = distributions_oracle(logits, log_std, 0.05, *PARAMS, row_weights=weights)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)
    inputs = [t for t in (logits, log_std) if t is not None]
    got_grads = torch.autograd.grad(weighted_sum_of_outputs(got), inputs)
    want_grads = torch.autograd.grad(weighted_sum_of_outputs(want), inputs)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("b, k", [(300, 4), (65, 16), (9, 1000), (3, 3000)], ids=str)
def test_weighted_means_of_every_dtype_match_the_oracle(dtype, b, k):
    logits, log_std = leaves(*random_heads(b, k, 2, dtype))
    weights = random_weights(b, torch.float32)
    got = weighted_loss(logits, log_std, weights)
    want = distributions_oracle(logits, log_std, 0.05, *PARAMS, row_weights=weights)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key].float(), **VALUE_TOLERANCES[torch.float32], msg=key)
    got_grads = torch.autograd.grad(weighted_sum_of_outputs(got), [logits, log_std])
    want_grads = torch.autograd.grad(weighted_sum_of_outputs(want), [logits, log_std])
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.double(), w.double(), **GRAD_TOLERANCES[dtype])


def test_a_row_of_weight_zero_takes_no_part_in_the_means_and_gets_no_gradient():
    logits, log_std = leaves(*random_heads(8, 5, 2, torch.float64))
    weights = torch.ones(8, dtype=torch.float64)
    weights[3] = 0.0
    got = weighted_loss(logits, log_std, weights)
    kept = [i for i in range(8) if i != 3]
    without_row = weighted_loss(logits[kept], log_std[kept], None)
    for key in KEYS:
        torch.testing.assert_close(got[key], without_row[key], rtol=1e-12, atol=1e-14, msg=key)
    grad_logits, grad_log_std = torch.autograd.grad(got["total"], [logits, log_std])
    assert (grad_logits[3] == 0).all() and (grad_log_std[3] == 0).all()


def test_weights_of_one_give_the_unweighted_means():
    logits, log_std = random_heads(70, 9, 3)
    got = weighted_loss(logits, log_std, torch.ones(70))
    want = weighted_loss(logits, log_std, None)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-7, msg=key)


def test_a_shared_log_std_is_not_weighted():
    logits, _ = random_heads(12, 4, 1, torch.float64)
    log_std = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    got = weighted_loss(logits, log_std, random_weights(12))
    want = distributions_oracle(logits, log_std, 0.05, *PARAMS)
    torch.testing.assert_close(got["continuous_entropy"], want["continuous_entropy"], rtol=1e-12, atol=1e-14)


def test_the_log_std_gradient_is_one_value_per_row_seen_along_the_columns():
    _, log_std = leaves(*random_heads(6, 1, 4, torch.float64))
    weights = random_weights(6)
    out = weighted_loss(None, log_std, weights)
    (grad,) = torch.autograd.grad(out["continuous_entropy"], [log_std])
    assert grad.shape == (6, 4) and grad.stride() == (1, 0)
    torch.testing.assert_close(grad[:, 0], weights / weights.sum(), rtol=1e-12, atol=0)


def test_the_weighted_means_are_bitwise_the_same_for_any_number_of_threads():
    logits, log_std = random_heads(5000, 16, 3)
    weights = random_weights(5000, torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = weighted_loss(logits, log_std, weights)
        torch.set_num_threads(max(2, threads))
        many = weighted_loss(logits, log_std, weights)
    finally:
        torch.set_num_threads(threads)
    for key in KEYS:
        assert torch.equal(one[key], many[key]), key


def test_weights_of_the_wrong_length_are_a_value_error_naming_them():
    logits, log_std = random_heads(5, 3, 2)
    with pytest.raises(ValueError, match=r"row_weights must be \[B\] = \[5\]"):
        weighted_loss(logits, log_std, torch.ones(4))


def test_weights_that_are_not_floating_are_a_type_error():
    logits, log_std = random_heads(5, 3, 2)
    with pytest.raises(TypeError, match="row_weights must be a floating tensor"):
        weighted_loss(logits, log_std, torch.ones(5, dtype=torch.int64))


def test_weights_without_a_per_row_head_are_a_value_error():
    with pytest.raises(ValueError, match="row_weights weigh the rows of logits or of a"):
        weighted_loss(None, torch.zeros(3), torch.ones(3))


def test_weights_that_require_grad_are_refused():
    logits, log_std = random_heads(5, 3, 2)
    with pytest.raises(NotImplementedError, match="row_weights receives no gradient"):
        weighted_loss(logits, log_std, torch.ones(5, requires_grad=True))


def test_weights_summing_to_zero_give_nan_means():
    # The mean of no rows, as torch.mean of an empty tensor.
    logits, log_std = random_heads(4, 3, 2)
    got = weighted_loss(logits, log_std, torch.zeros(4))
    assert math.isnan(got["discrete_entropy"].item()) and math.isnan(got["continuous_entropy"].item())


def test_opcheck_passes_with_row_weights():
    logits, log_std = random_heads(6, 5, 2)
    args = (logits.requires_grad_(), log_std.requires_grad_(), torch.tensor(0.05), *PARAMS, random_weights(6))
    torch.library.opcheck(OP.default, args)


def test_the_compiled_op_with_row_weights_matches_eager():
    logits, log_std = random_heads(16, 7, 2)
    weights = random_weights(16, torch.float32)

    def step(logits, log_std, weights):
        return OP(logits, log_std, torch.tensor(0.05), *PARAMS, weights)[0]

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(logits, log_std, weights), step(logits, log_std, weights))


@pytest.mark.parametrize("weights", [random_weights(6), torch.tensor([1.0, -1.0, 0, 0, 2.0, -2.0])],
                         ids=["random", "summing to zero"])
def test_a_log_std_expanded_from_one_row_is_not_weighted_forward_or_backward(weights):
    # [B, D] seen through a zero row stride is one shared row: its entropy, and its
    # gradient, are those without weights, even where the weights sum to 0.
    logits, _ = random_heads(6, 4, 1, torch.float64)
    row = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    got = weighted_loss(logits, row.expand(6, 3), weights)
    want = weighted_loss(logits, row.expand(6, 3), None)
    torch.testing.assert_close(got["continuous_entropy"], want["continuous_entropy"], rtol=0, atol=0)
    (got_grad,) = torch.autograd.grad(got["continuous_entropy"], [row])
    (want_grad,) = torch.autograd.grad(want["continuous_entropy"], [row])
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=0)


# --- a given mean denominator -------------------------------------------------------------


def loss_with_denominator(logits, log_std, weights, denominator, coeff):
    out = OP(logits, log_std, coeff, *PARAMS, weights, denominator)
    return dict(zip(KEYS, out[:7]))


@pytest.mark.parametrize("log_std_layout", ["rows", "shared", "expanded"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("heads", ["both", "log_std"])
def test_a_given_denominator_divides_the_weighted_sums_as_the_oracle_does(heads, weighted, log_std_layout):
    # H = sum_i c_i h_i / D for both heads; a shared log_std's entropy counts once per row.
    logits, log_std = random_heads(37, 6, 3, torch.float64)
    logits = leaves(logits)[0] if heads == "both" else None
    source = leaves(log_std if log_std_layout == "rows" else log_std[0])[0]
    log_std = {"rows": source, "shared": source, "expanded": source.expand(37, 3) if source.dim() == 1 else None}[
        log_std_layout]
    weights = random_weights(37) if weighted and (heads == "both" or log_std.dim() == 2) else None
    denominator = torch.tensor(2.5, dtype=torch.float64)
    coeff = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    got = loss_with_denominator(logits, log_std, weights, denominator, coeff)
    want = distributions_oracle(logits, log_std, coeff, *PARAMS, row_weights=weights, mean_denominator=denominator)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)
    inputs = [t for t in (logits, source, coeff) if t is not None]
    got_grads = torch.autograd.grad(weighted_sum_of_outputs(got), inputs)
    want_grads = torch.autograd.grad(weighted_sum_of_outputs(want), inputs)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)


def test_a_denominator_of_one_gives_the_weighted_sums():
    logits, log_std = random_heads(9, 4, 2, torch.float64)
    weights = random_weights(9)
    got = loss_with_denominator(logits, log_std, weights, torch.tensor(1.0), torch.tensor(0.05))
    torch.testing.assert_close(got["discrete_entropy"], (weights * categorical_entropies(logits)).sum(),
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got["continuous_entropy"], (weights * normal_entropies(log_std)).sum(),
                               rtol=1e-12, atol=1e-14)


def test_a_denominator_that_requires_grad_is_refused():
    logits, log_std = random_heads(5, 3, 2)
    with pytest.raises(NotImplementedError, match="mean_denominator receives no gradient"):
        loss_with_denominator(logits, log_std, None, torch.tensor(2.0, requires_grad=True), torch.tensor(0.05))


def test_a_denominator_that_is_not_0_dim_is_a_value_error_naming_it():
    logits, log_std = random_heads(5, 3, 2)
    with pytest.raises(ValueError, match=r"mean_denominator must be 0-dim .*got shape \[5\]"):
        loss_with_denominator(logits, log_std, None, torch.ones(5), torch.tensor(0.05))


def test_a_denominator_on_another_device_is_a_value_error_naming_it():
    logits, log_std = random_heads(5, 3, 2)
    with pytest.raises(ValueError, match=r"mean_denominator must be on the device of the inputs \(cpu\), got meta"):
        loss_with_denominator(logits, log_std, None, torch.ones((), device="meta"), torch.tensor(0.05))


def test_opcheck_passes_with_row_weights_and_a_mean_denominator():
    logits, log_std = random_heads(6, 5, 2)
    args = (logits.requires_grad_(), log_std.requires_grad_(), torch.tensor(0.05), *PARAMS, random_weights(6),
            torch.tensor(4.0))
    torch.library.opcheck(OP.default, args)


@pytest.mark.parametrize("k", [3, 16, 100], ids=lambda k: f"K={k}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_weights_of_one_give_bitwise_the_unweighted_logits_gradient(dtype, k):
    """Each row's gradient scale through the per-row kernels equals the one shared scale of
    the unweighted backward, so both write the same bits, on every CPU build."""
    logits = (2 * torch.randn(300, k, dtype=torch.float64)).to(dtype)
    for isa in SUPPORTED_CPU_ISAS:
        with forced_cpu_isa(isa):
            grads = []
            for weights in (None, torch.ones(300, dtype=dtype)):
                leaf = logits.clone().requires_grad_()
                torch.ops.hybrid_entropy_ext.hybrid_entropy_loss(
                    leaf, None, torch.tensor(0.05), 1.0, 0.5, 10.0, 10.0, 3.0, weights)[0].backward()
                grads.append(leaf.grad)
            assert torch.equal(grads[0].view(torch.uint8), grads[1].view(torch.uint8)), isa
