"""Sample masks and loss aggregation in ``hee.hybrid_entropy_loss``.

``sample_mask`` weighs the rows of ``[..., K]`` logits and ``[..., D]`` log_std (or counts
a shared ``[D]`` log_std once per row), and ``loss_agg_mode`` aggregates the per-row
entropies into ``H_d`` and ``H_c`` as verl's ``agg_loss`` does on one process
(``hybrid_entropy_ext/ops/aggregation.py``). Held to the float64 oracle of
tests/oracle.py, which writes the five aggregations out from their definitions, one
sequence at a time, on ``torch.distributions`` entropies.
"""

import math

import pytest
import torch

import hybrid_entropy_ext as hee
from common_utils import GRAD_TOLERANCES, VALUE_TOLERANCES
from hybrid_entropy_ext.ops.aggregation import LOSS_AGG_MODES, additive_aggregation_of_rows, aggregation_of_rows
from oracle import KEYS, OUTPUT_WEIGHTS, aggregated_oracle

B, T, K, D = 4, 7, 5, 3
# Thresholds high enough that both penalties are on, so that they see the aggregated H.
PARAMS = (1.0, 0.5, 10.0, 10.0, 3.0)
SEQUENCE_MODES = ("seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean")
TOKEN_MODES = ("token-mean", "token-sum")


def sequence_heads(dtype=torch.float64, leading=(B, T), shared_log_std=False, seed=0):
    """Leaves: logits ``[*leading, K]`` and log_std ``[*leading, D]`` (``[D]`` if shared),
    drawn in float64 and rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(*leading, K, generator=gen, dtype=torch.float64)
    log_std = 0.3 * torch.randn(*((D,) if shared_log_std else (*leading, D)), generator=gen, dtype=torch.float64)
    return logits.to(dtype).requires_grad_(), log_std.to(dtype).requires_grad_()


def padding_mask(kind, leading=(B, T), seed=1):
    """A mask of ``leading`` whose sequences (along the last dim) keep a prefix of random
    length, except the second, which is fully masked (with a single leading dim, the one
    sequence keeps its prefix): ``bool``, ``float`` (random weights on the kept tokens) or
    ``None``."""
    if kind is None:
        return None
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, leading[-1] + 1, leading[:-1], generator=gen)
    mask = torch.arange(leading[-1]) < lengths[..., None]
    sequences = mask.view(-1, leading[-1])
    if sequences.shape[0] > 1:
        sequences[1] = False
    if kind == "bool":
        return mask
    return mask.double() * torch.rand(leading, generator=gen, dtype=torch.float64)


def weighted_sum_of_outputs(out):
    return sum(OUTPUT_WEIGHTS[key] * out[key] for key in KEYS)


def assert_matches_oracle(logits, log_std, coeff, mask, mode, value_tol, grad_tol, loss_scale_factor=None):
    """The op's seven outputs and the gradients of a weighted sum of them, for every input
    that requires grad, against the oracle's."""
    got = hee.hybrid_entropy_loss(logits, log_std, coeff, *PARAMS, mask, mode, loss_scale_factor)
    want = aggregated_oracle(logits, log_std, coeff, *PARAMS, sample_mask=mask, loss_agg_mode=mode,
                             loss_scale_factor=loss_scale_factor)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key].to(got[key].dtype), **value_tol, msg=key)
    inputs = [t for t in (logits, log_std, coeff) if isinstance(t, torch.Tensor) and t.requires_grad]
    got_grads = torch.autograd.grad(weighted_sum_of_outputs(got), inputs)
    want_grads = torch.autograd.grad(weighted_sum_of_outputs(want), inputs)
    for name, g, w in zip(("first", "second", "third"), got_grads, want_grads):
        torch.testing.assert_close(g.double(), w.double(), **grad_tol(g.dtype), msg=name)


def float64_grad_tol(dtype):
    return GRAD_TOLERANCES[torch.float64]


# --- every mode against the oracle -------------------------------------------------------


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"], ids=str)
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_every_mode_matches_the_oracle_with_gradients_in_float64(mode, mask_kind):
    logits, log_std = sequence_heads()
    coeff = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    assert_matches_oracle(logits, log_std, coeff, padding_mask(mask_kind), mode,
                          VALUE_TOLERANCES[torch.float64], float64_grad_tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_every_mode_matches_the_oracle_for_each_dtype(mode, dtype):
    logits, log_std = sequence_heads(dtype)
    coeff = torch.tensor(0.05, dtype=torch.float32, requires_grad=True)
    assert_matches_oracle(logits, log_std, coeff, padding_mask("bool"), mode,
                          VALUE_TOLERANCES[torch.float32], lambda d: GRAD_TOLERANCES[d])


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"], ids=str)
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_a_shared_log_std_counts_once_per_row_in_every_mode(mode, mask_kind):
    logits, log_std = sequence_heads(shared_log_std=True)
    assert_matches_oracle(logits, log_std, 0.05, padding_mask(mask_kind), mode,
                          VALUE_TOLERANCES[torch.float64], float64_grad_tol)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_a_shared_log_std_alone_takes_its_rows_from_the_mask(mode):
    _, log_std = sequence_heads(shared_log_std=True)
    assert_matches_oracle(None, log_std, 0.05, padding_mask("float"), mode,
                          VALUE_TOLERANCES[torch.float64], float64_grad_tol)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("heads", ["logits", "log_std"])
def test_one_head_alone_matches_the_oracle(heads, mode):
    logits, log_std = sequence_heads()
    logits, log_std = (logits, None) if heads == "logits" else (None, log_std)
    assert_matches_oracle(logits, log_std, 0.05, padding_mask("bool"), mode,
                          VALUE_TOLERANCES[torch.float64], float64_grad_tol)


def test_seq_mean_token_sum_norm_divides_by_the_given_loss_scale_factor():
    logits, log_std = sequence_heads()
    assert_matches_oracle(logits, log_std, 0.05, padding_mask("bool"), "seq-mean-token-sum-norm",
                          VALUE_TOLERANCES[torch.float64], float64_grad_tol, loss_scale_factor=2.5)


# --- masks and shapes ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", SEQUENCE_MODES)
def test_a_fully_masked_sequence_takes_no_part_in_the_sequence_means(mode):
    logits, log_std = sequence_heads()
    mask = padding_mask("bool")
    assert not mask[1].any()
    kept = [0, 2, 3]
    got = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, mode)
    without = hee.hybrid_entropy_loss(logits[kept], log_std[kept], 0.05, *PARAMS, mask[kept], mode)
    for key in KEYS:
        torch.testing.assert_close(got[key], without[key], **VALUE_TOLERANCES[torch.float64], msg=key)
    grad_logits, grad_log_std = torch.autograd.grad(got["total"], [logits, log_std])
    assert torch.count_nonzero(grad_logits[1]) == 0 and torch.count_nonzero(grad_log_std[1]) == 0


def test_masked_tokens_get_no_gradient():
    logits, log_std = sequence_heads()
    mask = padding_mask("bool")
    out = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, "seq-mean-token-mean")
    grad_logits, grad_log_std = torch.autograd.grad(out["total"], [logits, log_std])
    assert torch.count_nonzero(grad_logits[~mask]) == 0 and torch.count_nonzero(grad_log_std[~mask]) == 0
    assert torch.count_nonzero(grad_logits[mask]) > 0


@pytest.mark.parametrize("leading", [(B * T,), (B, T), (2, B, T)], ids=["1", "2", "3"])
@pytest.mark.parametrize("mode", TOKEN_MODES)
def test_token_modes_take_any_number_of_leading_dims(mode, leading):
    logits, log_std = sequence_heads(leading=leading)
    assert_matches_oracle(logits, log_std, 0.05, padding_mask("float", leading), mode,
                          VALUE_TOLERANCES[torch.float64], float64_grad_tol)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_strided_inputs_match_the_oracle(mode):
    # Logits [B, T, K] seen through a transpose of [T, B, K] and a column slice; log_std
    # likewise; the mask through a transpose.
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(T, B, K + 2, generator=gen, dtype=torch.float64).transpose(0, 1)[..., 1:-1]
    log_std = torch.randn(T, B, D, generator=gen, dtype=torch.float64).transpose(0, 1)
    logits.requires_grad_()
    log_std.requires_grad_()
    mask = padding_mask("bool").t().contiguous().t()
    assert not logits.is_contiguous() and not log_std.is_contiguous() and not mask.is_contiguous()
    assert_matches_oracle(logits, log_std, 0.05, mask, mode, VALUE_TOLERANCES[torch.float64], float64_grad_tol)


def test_the_default_call_is_bitwise_the_op_without_the_new_arguments():
    logits, log_std = sequence_heads(torch.float32, leading=(B * T,))
    coeff = torch.tensor(0.05, requires_grad=True)
    op = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss
    plain = dict(zip(KEYS, op(logits, log_std, coeff, *PARAMS)[:7]))
    for got in (
        hee.hybrid_entropy_loss(logits, log_std, coeff, *PARAMS),
        hee.hybrid_entropy_loss(logits, log_std, coeff, *PARAMS, None, "token-mean", None),
    ):
        for key in KEYS:
            assert torch.equal(got[key], plain[key]), key
        got_grads = torch.autograd.grad(weighted_sum_of_outputs(got), [logits, log_std, coeff])
        plain_grads = torch.autograd.grad(weighted_sum_of_outputs(plain), [logits, log_std, coeff], retain_graph=True)
        for g, p in zip(got_grads, plain_grads):
            assert torch.equal(g, p)


def test_the_reference_matches_the_oracle_in_every_mode():
    logits, log_std = sequence_heads()
    mask = padding_mask("float")
    for mode in LOSS_AGG_MODES:
        got = hee.reference.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, mode)
        want = aggregated_oracle(logits, log_std, 0.05, *PARAMS, sample_mask=mask, loss_agg_mode=mode)
        for key in KEYS:
            torch.testing.assert_close(got[key], want[key], **VALUE_TOLERANCES[torch.float64], msg=f"{mode} {key}")


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_a_nan_weight_makes_the_aggregated_entropies_nan_in_every_mode(mode):
    logits, log_std = sequence_heads()
    mask = padding_mask("float")
    mask[0, 0] = math.nan
    out = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, mode)
    assert out["discrete_entropy"].isnan() and out["continuous_entropy"].isnan()


@pytest.mark.parametrize("loss_scale_factor", [None, 2.5], ids=["T", "2.5"])
@pytest.mark.parametrize("mask_kind", [None, "bool", "float"], ids=str)
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_the_additive_aggregation_of_one_process_is_the_aggregation_of_its_rows(mode, mask_kind, loss_scale_factor):
    # What each rank of the distributed regularizer sums: with one rank, the same mean.
    mask = padding_mask(mask_kind)
    entropies = torch.rand(B * T, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    device = entropies.device

    def mean(weights, denominator):
        total = entropies.sum() if weights is None else (weights * entropies).sum()
        return total if denominator is None else total / denominator

    weights, denominator = aggregation_of_rows(mask, mode, loss_scale_factor, [B, T], device)
    if mode == "token-mean" and denominator is None:  # the op's default: sum w (or N)
        denominator = torch.tensor(float(B * T)) if weights is None else weights.sum()
    additive = additive_aggregation_of_rows(mask, mode, loss_scale_factor, [B, T], device)
    torch.testing.assert_close(mean(*additive), mean(weights, denominator), rtol=1e-14, atol=0)


# --- errors -------------------------------------------------------------------------------


def call(mask=None, mode="token-mean", loss_scale_factor=None, leading=(B, T)):
    logits, log_std = sequence_heads(leading=leading)
    return hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, mode, loss_scale_factor)


def test_an_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match=r"loss_agg_mode must be one of token-mean, .*got 'seq-mean'"):
        call(mode="seq-mean")


def test_a_mode_that_is_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match=r"loss_agg_mode must be one of token-mean, .*got None \(NoneType\)"):
        call(mode=None)


@pytest.mark.parametrize("leading", [(B * T,), (2, B, T)], ids=["1", "3"])
@pytest.mark.parametrize("mode", SEQUENCE_MODES)
def test_a_sequence_mode_without_two_leading_dims_is_rejected(mode, leading):
    with pytest.raises(ValueError, match=r"needs inputs with exactly two leading dims \[B, T\].*got leading dims"):
        call(mode=mode, leading=leading)


def test_a_mask_of_another_shape_is_rejected():
    with pytest.raises(ValueError, match=r"sample_mask must have the inputs' leading shape \[4, 7\], got shape \[4, 6\]"):
        call(mask=torch.ones(B, T - 1, dtype=torch.bool))


def test_an_integer_mask_is_a_type_error():
    with pytest.raises(TypeError, match=r"sample_mask must be a bool or floating tensor, got dtype torch.int64"):
        call(mask=torch.ones(B, T, dtype=torch.int64))


def test_a_mask_on_another_device_is_rejected():
    with pytest.raises(ValueError, match=r"sample_mask must be on the device of the inputs \(cpu\), got meta"):
        call(mask=torch.ones(B, T, dtype=torch.bool, device="meta"))


@pytest.mark.parametrize("factor", [0.0, -1.0, math.inf, math.nan], ids=str)
def test_a_loss_scale_factor_that_is_not_a_finite_number_above_zero_is_rejected(factor):
    with pytest.raises(ValueError, match=r"loss_scale_factor must be a finite number > 0"):
        call(mode="seq-mean-token-sum-norm", loss_scale_factor=factor)


@pytest.mark.parametrize("factor", ["8", True], ids=str)
def test_a_loss_scale_factor_that_is_not_a_number_is_a_type_error(factor):
    with pytest.raises(TypeError, match=r"loss_scale_factor must be a finite number > 0"):
        call(mode="seq-mean-token-sum-norm", loss_scale_factor=factor)


# [T, D] would broadcast over B: a shape the op must reject rather than read as shared.
@pytest.mark.parametrize("log_std_shape", [(B, T + 1, D), (T, D), (B * T, D)], ids=["[B, T+1, D]", "[T, D]", "[BT, D]"])
@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_log_std_with_other_leading_dims_than_logits_is_rejected(implementation, log_std_shape):
    logits, _ = sequence_heads()
    loss_fn = hee.hybrid_entropy_loss if implementation == "fused" else hee.reference.hybrid_entropy_loss
    with pytest.raises(ValueError, match=r"log_std must be \[B, D\] or \[D\] .*leading dims of logits, \[4, 7\]"):
        loss_fn(logits, torch.zeros(log_std_shape, dtype=torch.float64), 0.05)


def test_a_rejected_call_changes_nothing():
    logits, log_std = sequence_heads()
    before = logits.detach().clone()
    with pytest.raises(ValueError):
        hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, None, "seq-mean-token-sum-norm", -1.0)
    assert logits.grad is None and torch.equal(logits.detach(), before)


# --- TorchScript, torch.compile, torch.export ---------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_the_scripted_wrapper_gives_eager_values_with_a_mask():
    scripted = torch.jit.script(hee.hybrid_entropy_loss)
    logits, log_std = sequence_heads()
    mask = padding_mask("bool")
    for mode in LOSS_AGG_MODES:
        got = scripted(logits, log_std, 0.05, *PARAMS, mask, mode, 3.0)
        want = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, mode, 3.0)
        for key in KEYS:
            assert torch.equal(got[key], want[key]), (mode, key)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_the_scripted_wrapper_rejects_an_unknown_mode():
    scripted = torch.jit.script(hee.hybrid_entropy_loss)
    logits, log_std = sequence_heads()
    with pytest.raises(torch.jit.Error, match=r"loss_agg_mode must be one of"):
        scripted(logits, log_std, 0.05, *PARAMS, None, "tokens", None)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_compiled_fullgraph_gives_eager_values_and_gradients(mode):
    def loss(logits, log_std, mask):
        out = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, mode, None)
        return weighted_sum_of_outputs(out)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    logits, log_std = sequence_heads(torch.float32)
    mask = padding_mask("bool")
    got = compiled(logits, log_std, mask)
    want = loss(logits, log_std, mask)
    torch.testing.assert_close(got, want, **VALUE_TOLERANCES[torch.float32])
    for g, w in zip(torch.autograd.grad(got, [logits, log_std]), torch.autograd.grad(want, [logits, log_std])):
        torch.testing.assert_close(g, w, **GRAD_TOLERANCES[torch.float32])


class MaskedLoss(torch.nn.Module):
    def forward(self, logits, log_std, mask):
        out = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, "seq-mean-token-mean", None)
        return out["total"], out["discrete_entropy"], out["continuous_entropy"]


def test_exported_program_with_a_mask_gives_eager_values():
    logits, log_std = sequence_heads(torch.float32)
    mask = padding_mask("bool")
    exported = torch.export.export(MaskedLoss(), (logits.detach(), log_std.detach(), mask))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "hybrid_entropy_ext.hybrid_entropy_loss.default" in targets
    other_mask = padding_mask("bool", seed=5)
    got = exported.module()(logits.detach(), log_std.detach(), other_mask)
    want = MaskedLoss()(logits.detach(), log_std.detach(), other_mask)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **VALUE_TOLERANCES[torch.float32])


# --- the regularizer ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_the_regularizer_aggregates_as_its_config_says(mode):
    regularizer = hee.HybridEntropyRegularizer(
        hee.EntropyRegularizationConfig(loss_agg_mode=mode, loss_scale_factor=3.0), penalty_multiplier=2.0
    )
    logits, log_std = sequence_heads()
    mask = padding_mask("float")
    got = regularizer(logits, log_std, 10, mask)
    coeff = regularizer.compute_adaptive_entropy_coefficient(10)
    want = aggregated_oracle(logits, log_std, coeff, 1.0, 0.5, 0.1, 0.1, 2.0, sample_mask=mask, loss_agg_mode=mode,
                             loss_scale_factor=3.0)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], **VALUE_TOLERANCES[torch.float64], msg=key)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_the_scripted_regularizer_with_a_sample_mask_gives_eager_values_and_gradients():
    regularizer = hee.HybridEntropyRegularizer(loss_agg_mode="seq-mean-token-mean")
    scripted = torch.jit.script(regularizer)
    logits, log_std = sequence_heads()
    mask = padding_mask("bool")
    got = scripted(logits, log_std, 3, mask)
    want = regularizer(logits, log_std, 3, mask)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    got_grads = torch.autograd.grad(got["total"], [logits, log_std])
    want_grads = torch.autograd.grad(want["total"], [logits, log_std])
    for g, w in zip(got_grads, want_grads):
        assert torch.equal(g, w)


def test_a_regularizer_pickled_before_the_aggregation_keys_loads_with_the_plain_mean():
    import pickle

    regularizer = hee.HybridEntropyRegularizer()
    del regularizer.__dict__["loss_agg_mode"], regularizer.__dict__["loss_scale_factor"]
    loaded = pickle.loads(pickle.dumps(regularizer))
    assert (loaded.loss_agg_mode, loaded.loss_scale_factor) == ("token-mean", None)
    logits, log_std = sequence_heads(leading=(B * T,))
    got = loaded(logits, log_std, 0)
    want = hee.HybridEntropyRegularizer()(logits, log_std, 0)
    for key in want:
        assert torch.equal(got[key], want[key]), key
