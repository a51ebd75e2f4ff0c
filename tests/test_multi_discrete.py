"""``hee.hybrid_entropy_loss(..., discrete_sizes=[K_1, ..., K_H])``: the logits' columns are
H sub-heads, each its own categorical (SB3's ``MultiDiscrete`` layout); ``H_d`` is the sum of
the sub-heads' batch entropies and the collapse penalty acts on each sub-head (the function's
docstring, docs/design.md "Sub-heads").

Values and gradients are held to the float64 oracle of tests/oracle.py (``sub_heads_oracle``:
``Categorical`` entropies of ``torch.split`` logits, the penalties written out per sub-head).
Kernel tests run once per CPU kernel build (the ``cpu_isa`` fixture); the CUDA kernels are held
to the CPU op by tests/test_cuda_emulated.py on the host and by a test here where a GPU is
present.
"""

import math

import pytest
import torch
from torch.distributions import Categorical, Normal

import hybrid_entropy_ext as hee
from hybrid_entropy_ext import reference
from common_utils import seeded_heads
from oracle import KEYS, sub_heads_oracle, weighted_output_sum

INF = math.inf
ROWS = 37
# One column, sub-heads in SIMD lanes (K_h <= 32; the backward's tile of a narrow sub-head)
# and along them (K_h > 32), and SB3-style mixes. Sub-heads of a power-of-two width read and
# write their tiles of strided rows by the register transposes: [1, 1], [4, 4, 4, 4] and
# [8, 16, 32, 2] have every such width, with full tiles (37 rows) and a partial one.
SIZES = ([1, 1], [4, 4, 4, 4], [3, 5, 2], [2, 40], [33, 1, 7], [16], [8, 16, 32, 2])
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
TOLERANCES = {
    torch.float64: (dict(rtol=1e-10, atol=1e-12), dict(rtol=1e-9, atol=1e-12)),
    torch.float32: (dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-4, atol=1e-7)),
    torch.bfloat16: (dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-2, atol=1e-5)),
    torch.float16: (dict(rtol=1e-5, atol=1e-6), dict(rtol=2e-3, atol=1e-6)),
}


def thresholds_between(sizes):
    """Per sub-head thresholds alternately above every entropy (penalty on) and at 0 (off)."""
    return [10.0 if h % 2 == 0 else 0.0 for h in range(len(sizes))]


def fused_values_and_grads(logits, log_std, **kwargs):
    leaves = [logits.detach().clone().requires_grad_(True), log_std.detach().clone().requires_grad_(True)]
    out = hee.hybrid_entropy_loss(*leaves, 0.05, **kwargs)
    grads = torch.autograd.grad(weighted_output_sum(out), leaves)
    return {k: v.detach() for k, v in out.items()}, grads


@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_and_gradients_match_the_multi_categorical_oracle(cpu_isa, dtype, sizes):
    logits, log_std = seeded_heads(ROWS, sum(sizes), dtype=dtype, seed=len(sizes))
    taus = thresholds_between(sizes)
    got, (grad_logits, grad_log_std) = fused_values_and_grads(
        logits, log_std, discrete_sizes=sizes, discrete_head_thresholds=taus, continuous_min_entropy_threshold=10.0
    )

    leaf = logits.double().requires_grad_(True)
    std_leaf = log_std.double().requires_grad_(True)
    want = sub_heads_oracle(leaf, std_leaf, 0.05, sizes, taus, continuous_min_entropy_threshold=10.0)
    want_logits, want_log_std = torch.autograd.grad(weighted_output_sum(want), [leaf, std_leaf])

    value_tol, grad_tol = TOLERANCES[dtype]
    for key in KEYS + ("discrete_entropy_per_head",):
        torch.testing.assert_close(got[key].double(), want[key].detach(), **value_tol, msg=key)
    torch.testing.assert_close(grad_logits.double(), want_logits, **grad_tol)
    torch.testing.assert_close(grad_log_std.double(), want_log_std, **grad_tol)


def test_one_collapsing_sub_head_is_penalized_where_the_summed_entropy_is_above_the_threshold():
    # Sub-head 0 is nearly deterministic, sub-head 1 uniform over 8: the sum is far above tau.
    logits = torch.cat([torch.tensor([[20.0, 0.0, 0.0]]).expand(16, 3), torch.zeros(16, 8)], dim=1)
    tau = 0.5
    per_head = hee.hybrid_entropy_loss(logits, None, 0.0, min_entropy_threshold=tau, discrete_sizes=[3, 8])
    # A penalty on the summed entropy H_d (SB3's MultiCategorical's) would be 0.
    assert per_head["discrete_entropy"].item() > 4 * tau
    head_entropies = per_head["discrete_entropy_per_head"]
    assert head_entropies[0] < tau < head_entropies[1]
    assert per_head["discrete_penalty"].item() == pytest.approx(3.0 * (tau - head_entropies[0].item()), rel=1e-6)


def test_the_gradient_of_a_sub_head_penalty_reaches_only_that_sub_heads_columns():
    logits = torch.cat([torch.tensor([[6.0, 0.0, 0.0]]).expand(16, 3), torch.randn(16, 8)], dim=1)
    logits.requires_grad_(True)
    out = hee.hybrid_entropy_loss(logits, None, 0.0, discrete_sizes=[3, 8], discrete_head_thresholds=[1.0, 0.0])
    (grad,) = torch.autograd.grad(out["total"], logits)
    assert out["discrete_penalty"].item() > 0.0
    assert grad[:, :3].abs().sum() > 0
    assert torch.count_nonzero(grad[:, 3:]) == 0


def test_one_sub_head_of_every_column_gives_the_bits_of_no_sub_heads(cpu_isa):
    logits, log_std = seeded_heads(ROWS, 9, dtype=torch.float32)
    plain, plain_grads = fused_values_and_grads(logits, log_std, min_entropy_threshold=10.0)
    one, one_grads = fused_values_and_grads(logits, log_std, min_entropy_threshold=10.0, discrete_sizes=[9])
    for key in KEYS:
        assert torch.equal(plain[key], one[key]), key
    assert torch.equal(one["discrete_entropy_per_head"], plain["discrete_entropy"].reshape(1))
    for got, want in zip(one_grads, plain_grads):
        assert torch.equal(got, want)


def test_min_entropy_threshold_applies_to_every_sub_head_without_head_thresholds():
    logits, log_std = seeded_heads(ROWS, 10)
    common = hee.hybrid_entropy_loss(logits, log_std, 0.05, min_entropy_threshold=1.0, discrete_sizes=[3, 5, 2])
    listed = hee.hybrid_entropy_loss(
        logits, log_std, 0.05, min_entropy_threshold=None, discrete_sizes=[3, 5, 2],
        discrete_head_thresholds=[1.0, 1.0, 1.0],
    )
    for key in KEYS + ("discrete_entropy_per_head",):
        assert torch.equal(common[key], listed[key]), key


def test_per_head_entropies_are_float32_for_16_bit_logits_and_absent_without_sub_heads():
    logits, log_std = seeded_heads(8, 6, dtype=torch.bfloat16)
    out = hee.hybrid_entropy_loss(logits, log_std, 0.01, discrete_sizes=[2, 4])
    assert out["discrete_entropy_per_head"].shape == (2,)
    assert out["discrete_entropy_per_head"].dtype == torch.float32
    assert "discrete_entropy_per_head" not in hee.hybrid_entropy_loss(logits, log_std, 0.01)


def test_sub_heads_with_an_action_mask_match_the_oracle_on_the_neg_inf_form(cpu_isa):
    sizes = [3, 5, 2]
    logits, log_std = seeded_heads(ROWS, 10, dtype=torch.float32, seed=3)
    generator = torch.Generator().manual_seed(5)
    allowed = torch.rand(ROWS, 10, generator=generator) < 0.6
    allowed[:4, 3:8] = False  # sub-head 1 with nothing allowed in four rows: entropy 0 there
    taus = [10.0, 10.0, 10.0]
    got, (grad_logits, _) = fused_values_and_grads(
        logits, log_std, action_mask=allowed, discrete_sizes=sizes, discrete_head_thresholds=taus
    )
    leaf = logits.double().requires_grad_(True)
    want = sub_heads_oracle(leaf.masked_fill(~allowed, -INF), log_std.double(), 0.05, sizes, taus)
    (want_logits,) = torch.autograd.grad(weighted_output_sum(want), [leaf])
    for key in KEYS + ("discrete_entropy_per_head",):
        torch.testing.assert_close(got[key].double(), want[key].detach(), rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(grad_logits.double(), want_logits, rtol=1e-4, atol=1e-7)
    assert torch.count_nonzero(grad_logits[~allowed]) == 0


def test_weighted_rows_and_leading_dims_match_the_reference():
    sizes = [4, 4, 4, 4]
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 11, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    log_std = torch.randn(3, 11, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 11, generator=generator) < 0.7
    kwargs = dict(
        discrete_sizes=sizes, min_entropy_threshold=1.3, sample_mask=mask, loss_agg_mode="seq-mean-token-mean"
    )
    got = hee.hybrid_entropy_loss(logits, log_std, 0.05, **kwargs)
    want = reference.hybrid_entropy_loss(logits, log_std, 0.05, **kwargs)
    for key in KEYS + ("discrete_entropy_per_head",):
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14, msg=key)
    got_grads = torch.autograd.grad(weighted_output_sum(got), [logits, log_std])
    want_grads = torch.autograd.grad(weighted_output_sum(want), [logits, log_std])
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)


def test_the_reference_matches_the_oracle():
    sizes = [3, 5, 2]
    logits, log_std = seeded_heads(ROWS, 10, dtype=torch.float64, seed=11)
    taus = [2.0, 0.0, 1.0]
    got = reference.hybrid_entropy_loss(logits, log_std, 0.05, discrete_sizes=sizes, discrete_head_thresholds=taus)
    want = sub_heads_oracle(logits, log_std, 0.05, sizes, taus)
    for key in KEYS + ("discrete_entropy_per_head",):
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14, msg=key)


@pytest.mark.parametrize(
    "sizes, message",
    [
        ([3, 3], "sum to 6, but the logits have K = 7"),
        ([0, 7], "must be positive, got 0 at position 0"),
        ([8, -1], "must be positive, got -1 at position 1"),
        ([], "at least one sub-head"),
    ],
    ids=["wrong-sum", "zero", "negative", "empty"],
)
def test_bad_discrete_sizes_are_a_value_error_naming_them(sizes, message):
    logits, log_std = seeded_heads(4, 7)
    with pytest.raises(ValueError, match=message):
        hee.hybrid_entropy_loss(logits, log_std, 0.01, discrete_sizes=sizes)


def test_head_thresholds_without_sub_heads_are_a_value_error():
    logits, log_std = seeded_heads(4, 7)
    with pytest.raises(ValueError, match="discrete_head_thresholds are the thresholds of the sub-heads of discrete_sizes"):
        hee.hybrid_entropy_loss(logits, log_std, 0.01, discrete_head_thresholds=[0.3])
    with pytest.raises(ValueError, match="discrete_head_thresholds are the thresholds of the sub-heads of discrete_sizes"):
        reference.hybrid_entropy_loss(logits, log_std, 0.01, discrete_head_thresholds=[0.3])


def test_sizes_whose_sum_overflows_are_a_value_error():
    logits, log_std = seeded_heads(4, 4)
    with pytest.raises(ValueError, match="overflow int64"):
        hee.hybrid_entropy_loss(logits, log_std, 0.01, discrete_sizes=[3, 2**63 - 1, 2**63 - 1, 3])


def test_discrete_sizes_without_logits_are_a_value_error():
    with pytest.raises(ValueError, match="discrete_sizes splits the logits into sub-heads, but there are no logits"):
        hee.hybrid_entropy_loss(None, torch.zeros(4, 2), 0.01, discrete_sizes=[2])


@pytest.mark.parametrize(
    "thresholds, message",
    [([0.1], r"one threshold per discrete sub-head \(2\), got 1"), ([0.1, math.nan], "must be finite")],
    ids=["length", "nan"],
)
def test_bad_head_thresholds_are_a_value_error(thresholds, message):
    logits, log_std = seeded_heads(4, 7)
    with pytest.raises(ValueError, match=message):
        hee.hybrid_entropy_loss(logits, log_std, 0.01, discrete_sizes=[3, 4], discrete_head_thresholds=thresholds)


def test_scripted_and_compiled_calls_give_the_eager_values_and_gradients():
    logits, log_std = seeded_heads(ROWS, 10, dtype=torch.float32, seed=2)
    kwargs = dict(discrete_sizes=[3, 5, 2], discrete_head_thresholds=[10.0, 0.0, 10.0])
    eager, eager_grads = fused_values_and_grads(logits, log_std, **kwargs)
    scripted_loss = torch.jit.script(hee.hybrid_entropy_loss)

    def compiled_loss(z, s):
        return hee.hybrid_entropy_loss(z, s, 0.05, **kwargs)

    compiled = torch.compile(compiled_loss, fullgraph=True, backend="aot_eager")
    for call in (lambda z, s: scripted_loss(z, s, 0.05, **kwargs), compiled):
        leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
        out = call(*leaves)
        grads = torch.autograd.grad(weighted_output_sum(out), leaves)
        for key in eager:
            assert torch.equal(out[key].detach(), eager[key]), key
        for got, want in zip(grads, eager_grads):
            assert torch.equal(got, want)


def test_opcheck_passes_with_sub_heads():
    logits, log_std = seeded_heads(6, 7, dtype=torch.float64)
    args = (
        logits.requires_grad_(True), log_std.requires_grad_(True), torch.tensor(0.05, dtype=torch.float64),
        1.0, 0.5, 10.0, 0.1, 3.0, None, None, None, [3, 4], [10.0, 0.0],
    )
    torch.library.opcheck(torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default, args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_sub_heads_on_cuda_match_the_cpu_op():
    logits, log_std = seeded_heads(64, 7)
    kwargs = dict(discrete_sizes=[3, 4], discrete_head_thresholds=[0.5, 10.0])
    leaves = [t.clone().requires_grad_(True) for t in (logits, log_std)]
    cuda_leaves = [t.cuda().requires_grad_(True) for t in (logits, log_std)]
    want = hee.hybrid_entropy_loss(*leaves, 0.01, **kwargs)
    got = hee.hybrid_entropy_loss(*cuda_leaves, 0.01, **kwargs)
    for key, value in want.items():
        torch.testing.assert_close(got[key].cpu(), value, rtol=1e-5, atol=1e-6, msg=key)
    for g, w in zip(torch.autograd.grad(got["total"], cuda_leaves), torch.autograd.grad(want["total"], leaves)):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-4, atol=1e-7)


# --- the regularizer, its YAML keys and the monitor ------------------------------------


def test_the_regularizer_passes_the_configs_sub_heads_to_the_op():
    config = hee.EntropyRegularizationConfig(
        enable_adaptive_entropy=False, entropy_coeff=0.05, discrete_sizes=[3, 5, 2],
        discrete_head_thresholds=[10.0, 0.0, 10.0],
    )
    regularizer = hee.HybridEntropyRegularizer(config)
    logits, log_std = seeded_heads(ROWS, 10, seed=4)
    got = regularizer(logits, log_std)
    want = hee.hybrid_entropy_loss(
        logits, log_std, 0.05, discrete_sizes=[3, 5, 2], discrete_head_thresholds=[10.0, 0.0, 10.0],
        min_entropy_threshold=config.min_entropy_threshold,
        continuous_min_entropy_threshold=config.resolved_continuous_min_entropy_threshold,
    )
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_a_scripted_regularizer_with_sub_heads_gives_the_eager_outputs():
    regularizer = hee.HybridEntropyRegularizer(discrete_sizes=[4, 4, 4, 4], min_entropy_threshold=1.2)
    logits, log_std = seeded_heads(ROWS, 16, seed=6)
    eager = regularizer(logits, log_std, 3)
    scripted = torch.jit.script(regularizer)(logits, log_std, 3)
    assert sorted(scripted) == sorted(eager)
    for key in eager:
        assert torch.equal(scripted[key], eager[key]), key


def test_sub_head_keys_round_trip_through_yaml():
    config = hee.EntropyRegularizationConfig(discrete_sizes=[3, 5, 2], discrete_head_thresholds=[0.1, 0.2, 0.3])
    text = config.to_yaml()
    assert "discrete_sizes:\n- 3\n- 5\n- 2\n" in text
    assert hee.EntropyRegularizationConfig.from_yaml(text) == config
    assert "discrete_sizes" not in hee.EntropyRegularizationConfig().to_yaml()


@pytest.mark.parametrize(
    "keys, error, message",
    [
        (dict(discrete_sizes=[3, 0]), ValueError, r"discrete_sizes\[1\]: expected an integer > 0, got 0"),
        (dict(discrete_sizes=[]), ValueError, "discrete_sizes: expected a non-empty list"),
        (dict(discrete_sizes=[2.5]), TypeError, r"discrete_sizes\[0\]: expected an integer > 0, got 2.5"),
        (dict(discrete_sizes=[2, True]), TypeError, r"discrete_sizes\[1\]: expected an integer > 0, got True"),
        (dict(discrete_head_thresholds=[-0.1]), ValueError, r"discrete_head_thresholds\[0\]"),
        (dict(discrete_sizes=[2, 3], discrete_head_thresholds=[0.1]), ValueError,
         r"one threshold per discrete sub-head \(2, from discrete_sizes\), got 1"),
        (dict(discrete_head_thresholds=[0.1]), ValueError, "the thresholds of the sub-heads of discrete_sizes"),
    ],
    ids=["zero", "empty", "float", "bool", "negative-threshold", "threshold-count", "threshold-without-sizes"],
)
def test_bad_sub_head_keys_are_rejected_naming_the_key(keys, error, message):
    with pytest.raises(error, match=message):
        hee.EntropyRegularizationConfig(**keys)


def test_the_monitor_records_each_sub_heads_entropy(tmp_path):
    regularizer = hee.HybridEntropyRegularizer(discrete_sizes=[3, 5, 2])
    monitor = hee.EntropyMonitor()
    logits, log_std = seeded_heads(ROWS, 10, seed=8)
    out = regularizer(logits, log_std)
    row = monitor.record(out, episode=0)
    for h in range(3):
        assert row[f"discrete_entropy_head_{h}"] == pytest.approx(out["discrete_entropy_per_head"][h].item())
    header = monitor.to_csv(tmp_path / "entropy.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["discrete_entropy_head_0", "discrete_entropy_head_1", "discrete_entropy_head_2"]


# --- hybrid_entropy_loss_from_distributions: multi-categoricals ------------------------


class SB3MultiCategoricalDistribution:
    """Stable-Baselines3 2.9.2's ``MultiCategoricalDistribution`` after ``proba_distribution``:
    one ``Categorical`` per sub-head of the split logits, in ``distribution``."""

    def __init__(self, logits, sizes):
        self.distribution = [Categorical(logits=z) for z in torch.split(logits, list(sizes), dim=1)]


class SB3MaskableCategorical(Categorical):
    """sb3-contrib 2.9.2's ``MaskableCategorical``: the mask kept as ``masks``, the ruled-out
    logits replaced by -1e8."""

    def __init__(self, logits, masks):
        self.masks = masks
        super().__init__(logits=torch.where(masks, logits, torch.tensor(-1e8, dtype=logits.dtype)))


class SB3MaskableMultiCategoricalDistribution:
    """sb3-contrib 2.9.2's ``MaskableMultiCategoricalDistribution`` after ``apply_masking``:
    one ``MaskableCategorical`` per sub-head, in ``distributions``."""

    def __init__(self, logits, sizes, masks):
        pairs = zip(torch.split(logits, list(sizes), dim=1), torch.split(masks, list(sizes), dim=1))
        self.distributions = [SB3MaskableCategorical(z, m) for z, m in pairs]


def test_an_sb3_multi_categorical_is_a_multi_discrete_head_with_its_gaussian():
    sizes, taus = [3, 5, 2], [10.0, 0.0, 10.0]
    logits, log_std = seeded_heads(ROWS, 10, dtype=torch.float64, seed=12)
    leaf = logits.clone().requires_grad_(True)
    dists = {"discrete": SB3MultiCategoricalDistribution(leaf, sizes),
             "continuous": Normal(torch.zeros_like(log_std), log_std.exp())}
    got = hee.hybrid_entropy_loss_from_distributions(dists, 0.05, discrete_head_thresholds=taus)
    oracle_leaf = logits.clone().requires_grad_(True)
    want = sub_heads_oracle(oracle_leaf, log_std, 0.05, sizes, taus)
    for key in KEYS + ("discrete_entropy_per_head",):
        torch.testing.assert_close(got[key], want[key].detach(), rtol=1e-10, atol=1e-12, msg=key)
    (got_grad,) = torch.autograd.grad(weighted_output_sum(got), leaf)
    (want_grad,) = torch.autograd.grad(weighted_output_sum(want), oracle_leaf)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-9, atol=1e-12)


def test_a_list_of_categoricals_gives_the_sum_of_their_entropies():
    logits, _ = seeded_heads(ROWS, 9, seed=13)
    heads = [Categorical(logits=z) for z in torch.split(logits, [4, 5], dim=1)]
    got = hee.hybrid_entropy_loss_from_distributions(heads, 0.05)
    want = sum(h.entropy().mean() for h in heads)  # SB3's MultiCategorical entropy, batch mean
    torch.testing.assert_close(got["discrete_entropy"], want, rtol=1e-6, atol=1e-6)


def test_an_sb3_contrib_masked_multi_categoricals_masks_reach_the_op_per_sub_head():
    sizes = [3, 5, 2]
    logits, _ = seeded_heads(ROWS, 10, seed=14)
    generator = torch.Generator().manual_seed(15)
    allowed = torch.rand(ROWS, 10, generator=generator) < 0.6
    got = hee.hybrid_entropy_loss_from_distributions(
        SB3MaskableMultiCategoricalDistribution(logits, sizes, allowed), 0.05, min_entropy_threshold=10.0
    )
    want = sub_heads_oracle(logits.double().masked_fill(~allowed, -INF), None, 0.05, sizes, [10.0] * 3)
    for key in KEYS + ("discrete_entropy_per_head",):
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-5, atol=1e-6, msg=key)


def test_categoricals_of_different_batch_shapes_are_a_value_error():
    heads = [Categorical(logits=torch.randn(4, 3)), Categorical(logits=torch.randn(5, 3))]
    with pytest.raises(ValueError, match=r"must share one batch shape, got \[\(4,\), \(5,\)\]"):
        hee.hybrid_entropy_loss_from_distributions(heads, 0.05)
