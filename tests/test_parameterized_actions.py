"""``hee.hybrid_entropy_loss(..., parameterized_actions=True)``: each discrete action ``k`` has
its own ``P`` Gaussian parameters (``log_std`` ``[..., K, P]``, or ``[K, P]`` shared), and a
row's continuous entropy is the expected entropy of the chosen action's parameters,
``h_c = sum_k p_k c_k`` (the function's docstring, docs/design.md "Parameterized actions").

Values and gradients are held to a float64 oracle written from the definition:
``Categorical(logits).probs`` (the ``-inf`` form of the action mask) times each action's
``Normal`` entropy summed over its parameters, aggregated by tests/oracle.py's ``aggregate``,
then the loss formula (``combine``); gradients by autograd through it. Kernel tests run once
per CPU kernel build; the CUDA kernels are held to the CPU op by tests/test_cuda_emulated.py on
the host and to the oracle by a test here where a GPU is present.
"""

import math

import pytest
import torch
from torch.distributions import Categorical, Normal

import hybrid_entropy_ext as hee
from hybrid_entropy_ext import reference
from hybrid_entropy_ext.ops.aggregation import LOSS_AGG_MODES
from common_utils import SUPPORTED_CPU_ISAS, forced_cpu_isa
from oracle import KEYS, aggregate, categorical_entropies, combine, weighted_output_sum

INF = math.inf
OP = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
TOLERANCES = {  # (values, gradients), against the float64 oracle of the inputs as given
    torch.float64: (dict(rtol=1e-10, atol=1e-12), dict(rtol=1e-9, atol=1e-12)),
    torch.float32: (dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-4, atol=1e-7)),
    torch.bfloat16: (dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-2, atol=1e-5)),
    torch.float16: (dict(rtol=1e-5, atol=1e-5), dict(rtol=2e-3, atol=1e-6)),
}
TAU_D, TAU_C = 0.5, 10.0  # the continuous penalty active: its gradient is checked too


def heads(leading, k, p, dtype=torch.float32, shared=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(*leading, k, generator=generator)).to(dtype)
    shape = (k, p) if shared else (*leading, k, p)
    log_std = (0.5 * torch.randn(*shape, generator=generator) - 0.3).to(dtype)
    return logits, log_std


def random_mask(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.rand(shape, generator=generator) < 0.6
    allowed[..., 0] = True  # every row has a choice: rows without one have their own test
    return allowed


def expected_action_entropies(logits, log_std, allowed=None):
    """``sum_k p_k c_k`` per row, float64: ``p`` from ``Categorical``, ``c_k`` the ``Normal``
    entropy of action ``k``'s parameters."""
    z = logits.double()
    if allowed is not None:
        z = z.masked_fill(~allowed, -INF)
    ls = log_std.double()
    action_entropies = Normal(torch.zeros_like(ls), ls.exp()).entropy().sum(-1)  # [..., K]
    return (Categorical(logits=z).probs * action_entropies).sum(-1)


def parameterized_oracle(logits, log_std, allowed=None, sample_mask=None, mode="token-mean", coeff=0.05):
    z = logits.double() if allowed is None else logits.double().masked_fill(~allowed, -INF)
    weights = torch.ones(logits.shape[:-1], dtype=torch.float64) if sample_mask is None else sample_mask.double()
    h_d = aggregate(categorical_entropies(z), weights, mode)
    h_c = aggregate(expected_action_entropies(logits, log_std, allowed), weights, mode)
    return combine(h_d, h_c, coeff, 1.0, 0.5, TAU_D, TAU_C, 3.0, True, True)


def loss(logits, log_std, **kwargs):
    return hee.hybrid_entropy_loss(
        logits, log_std, 0.05, min_entropy_threshold=TAU_D, continuous_min_entropy_threshold=TAU_C,
        parameterized_actions=True, **kwargs)


def assert_matches_oracle(logits, log_std, dtype, allowed=None, sample_mask=None, mode="token-mean"):
    leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
    got = loss(*leaves, action_mask=allowed, sample_mask=sample_mask, loss_agg_mode=mode)
    got_grads = torch.autograd.grad(weighted_output_sum(got), leaves)
    oracle_leaves = [logits.double().requires_grad_(True), log_std.double().requires_grad_(True)]
    want = parameterized_oracle(*oracle_leaves, allowed, sample_mask, mode)
    want_grads = torch.autograd.grad(weighted_output_sum(want), oracle_leaves)
    value_tol, grad_tol = TOLERANCES[dtype]
    for key in KEYS:
        torch.testing.assert_close(got[key].double(), want[key].detach(), **value_tol, msg=key)
    for name, g, w in zip(("logits", "log_std"), got_grads, want_grads):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g.double(), w, **grad_tol, msg=name)


# K <= 32: h_c in the forward's pass, rows in lanes; 8, 16, 32: the shared log_std's backward
# with its sums in one, two and four vectors of registers; 37: rows along the lanes.
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "action-mask"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
@pytest.mark.parametrize("k", [1, 3, 8, 16, 32, 37])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_and_gradients_match_the_oracle(cpu_isa, dtype, k, shared, masked):
    logits, log_std = heads((67,), k, 3, dtype, shared, seed=k)
    allowed = random_mask((67, k), seed=k) if masked else None
    assert_matches_oracle(logits, log_std, dtype, allowed)


@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_many_runs_of_rows_match_the_oracle(cpu_isa, shared):
    # More than 16 blocks of 64 rows: the passes run on several runs of rows, each from its
    # own first row, and threads split them.
    logits, log_std = heads((3001,), 7, 3, torch.float32, shared, seed=30)
    assert_matches_oracle(logits, log_std, torch.float32, random_mask((3001, 7), seed=31))


@pytest.mark.parametrize(
    "logits_dtype, log_std_dtype",
    [(torch.bfloat16, torch.float32), (torch.float32, torch.float64), (torch.float64, torch.float32)],
    ids=str,
)
def test_mixed_dtypes_match_the_oracle_to_the_logits_precision(logits_dtype, log_std_dtype):
    logits, _ = heads((67,), 5, 3, logits_dtype, seed=32)
    _, log_std = heads((67,), 5, 3, log_std_dtype, seed=33)
    # h_c is accumulated as p is, in the logits' accumulation dtype.
    assert_matches_oracle(logits, log_std, logits_dtype if logits_dtype != torch.float64 else torch.float32)


def test_normalized_discrete_entropy_combines_with_parameterized_actions():
    logits, log_std = heads((4, 9), 6, 2, torch.float64, seed=34)
    allowed = random_mask((4, 9, 6), seed=35)
    kwargs = dict(min_entropy_threshold=0.9, continuous_min_entropy_threshold=TAU_C, action_mask=allowed,
                  normalize_discrete_entropy=True, parameterized_actions=True)
    leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
    got = hee.hybrid_entropy_loss(*leaves, 0.05, **kwargs)
    oracle_leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
    want = reference.hybrid_entropy_loss(*oracle_leaves, 0.05, **kwargs)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14, msg=key)
    for g, w in zip(torch.autograd.grad(weighted_output_sum(got), leaves),
                    torch.autograd.grad(weighted_output_sum(want), oracle_leaves)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
@pytest.mark.parametrize("wanted", ["logits", "log_std"])
def test_one_inputs_gradient_alone_is_the_same_as_with_both(shared, wanted):
    logits, log_std = heads((300,), 5, 3, torch.float32, shared, seed=36)
    leaves = {"logits": logits.clone().requires_grad_(True), "log_std": log_std.clone().requires_grad_(True)}
    both = dict(zip(leaves, torch.autograd.grad(loss(*leaves.values())["total"], list(leaves.values()))))
    alone_leaves = {"logits": logits, "log_std": log_std, wanted: leaves[wanted].detach().clone().requires_grad_(True)}
    (alone,) = torch.autograd.grad(loss(*alone_leaves.values())["total"], alone_leaves[wanted])
    assert torch.equal(alone, both[wanted])


def test_the_backward_op_rejects_row_statistics_without_the_expected_action_entropies():
    logits, log_std = heads((8,), 5, 2, torch.float64, seed=37)
    coeff = torch.tensor(0.05, dtype=torch.float64)
    out = OP(logits, log_std, coeff, parameterized_actions=True)
    assert out[7].shape == (4, 8)
    grads = [torch.ones((), dtype=torch.float64)] + [None] * 6
    with pytest.raises(ValueError, match=r"row_stats must be \[4, H \* B\] = \[4, 8\]"):
        torch.ops.hybrid_entropy_ext._hybrid_entropy_loss_backward(
            *grads, logits, log_std, coeff, out[7][:3], out[5], out[6], out[8], [True, True, True],
            1.0, 0.5, 0.1, 0.1, 3.0, None, None, None, None, None, False, True)


@pytest.mark.parametrize("num_params", [1, 2, 4, 5])
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_any_number_of_parameters_matches_the_oracle(num_params, shared):
    logits, log_std = heads((29,), 6, num_params, torch.float64, shared, seed=num_params)
    assert_matches_oracle(logits, log_std, torch.float64)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_every_aggregation_mode_matches_the_oracle(mode, shared):
    logits, log_std = heads((4, 9), 6, 2, torch.float64, shared, seed=5)
    sample_mask = torch.arange(9) < torch.tensor([[9], [4], [0], [7]])
    assert_matches_oracle(logits, log_std, torch.float64, sample_mask=sample_mask, mode=mode)


def test_float_sample_weights_match_the_oracle():
    logits, log_std = heads((50,), 5, 2, torch.float64, seed=6)
    weights = torch.rand(50, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert_matches_oracle(logits, log_std, torch.float64, sample_mask=weights)


def test_ruled_out_actions_drop_out_as_if_absent():
    # Actions 1 and 3 ruled out in every row, by the mask or by -inf: the values are those
    # of the policy over the three others, and the ruled-out parameters get gradient 0.
    logits, log_std = heads((40,), 5, 3, torch.float64, seed=8)
    kept = [0, 2, 4]
    allowed = torch.zeros(40, 5, dtype=torch.bool)
    allowed[:, kept] = True
    without = loss(logits[:, kept], log_std[:, kept])
    for masked in (dict(action_mask=allowed), dict()):
        z = logits.clone() if masked else logits.masked_fill(~allowed, -INF)
        leaves = [z.requires_grad_(True), log_std.clone().requires_grad_(True)]
        got = loss(*leaves, **masked)
        for key in KEYS:
            torch.testing.assert_close(got[key], without[key], rtol=1e-12, atol=1e-14, msg=key)
        grad_logits, grad_log_std = torch.autograd.grad(got["total"], leaves)
        assert torch.count_nonzero(grad_logits[~allowed]) == 0
        assert torch.count_nonzero(grad_log_std[~allowed]) == 0


def test_a_row_without_allowed_actions_contributes_0_and_gets_gradient_0():
    logits, log_std = heads((6,), 4, 2, torch.float64, seed=9)
    allowed = torch.ones(6, 4, dtype=torch.bool)
    allowed[2] = False
    leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
    got = loss(*leaves, action_mask=allowed)
    rows = expected_action_entropies(logits, log_std)
    rows[2] = 0.0
    torch.testing.assert_close(got["continuous_entropy"], rows.mean(), rtol=1e-12, atol=1e-14)
    grad_logits, grad_log_std = torch.autograd.grad(got["total"], leaves)
    assert torch.count_nonzero(grad_logits[2]) == 0 and torch.count_nonzero(grad_log_std[2]) == 0


def test_actions_with_equal_parameters_give_the_plain_gaussian_entropy_and_no_logits_gradient():
    # sum_k p_k c = c whatever p: H_c is the Gaussian head's, and d H_c / d z = p (c - c) = 0.
    logits = torch.randn(30, 7, dtype=torch.float64, requires_grad=True)
    row = torch.tensor([0.3, -1.2, 0.05], dtype=torch.float64)
    got = hee.hybrid_entropy_loss(logits, row.expand(7, 3), 0.0, min_entropy_threshold=None,
                                  continuous_min_entropy_threshold=None, parameterized_actions=True)
    plain = hee.hybrid_entropy_loss(None, row, 0.0)
    torch.testing.assert_close(got["continuous_entropy"], plain["continuous_entropy"], rtol=1e-14, atol=0)
    (grad,) = torch.autograd.grad(got["continuous_entropy"], logits)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-15)


def test_shared_log_std_gives_the_per_sample_results_of_its_expansion():
    logits, shared = heads((70,), 6, 3, torch.float64, shared=True, seed=10)
    a = loss(logits, shared)
    b = loss(logits, shared.expand(70, 6, 3).contiguous())
    for key in KEYS:
        torch.testing.assert_close(a[key], b[key], rtol=1e-13, atol=1e-15, msg=key)


def test_an_expanded_per_sample_log_std_gets_each_rows_gradient():
    # Each row's gradient is its own a p_k: summed over the rows, that of the shared [K, P].
    logits, shared = heads((10,), 4, 2, torch.float64, shared=True, seed=11)
    expanded = shared.expand(10, 4, 2).requires_grad_(True)
    shared = shared.clone().requires_grad_(True)
    (grad_expanded,) = torch.autograd.grad(loss(logits, expanded)["total"], expanded)
    (grad_shared,) = torch.autograd.grad(loss(logits, shared)["total"], shared)
    assert not torch.equal(grad_expanded[0], grad_expanded[1])
    torch.testing.assert_close(grad_expanded.sum(0), grad_shared, rtol=1e-13, atol=1e-16)


def test_leading_dims_are_rows():
    logits, log_std = heads((3, 5), 4, 2, torch.float64, seed=12)
    got = loss(logits, log_std)
    flat = loss(logits.reshape(15, 4), log_std.reshape(15, 4, 2))
    for key in KEYS:
        assert torch.equal(got[key], flat[key]), key


def test_the_shared_log_std_gradient_does_not_depend_on_the_thread_count():
    logits, log_std = heads((20000,), 16, 3, torch.float32, shared=True, seed=13)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            leaf = log_std.clone().requires_grad_(True)
            grads.append(torch.autograd.grad(loss(logits, leaf)["total"], leaf)[0])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("num_params", [3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_every_cpu_build_computes_the_same_action_entropies(dtype, num_params):
    # With one action per row, p = 1 and each row's h_c (row 3 of row_stats) is its action's
    # entropy c itself; 37 rows leave a tail after whole vectors of actions.
    logits, log_std = heads((37,), 1, num_params, dtype, seed=15)
    action_entropies = {}
    for isa in SUPPORTED_CPU_ISAS:
        with forced_cpu_isa(isa):
            row_stats = OP(logits, log_std, torch.tensor(0.05), parameterized_actions=True)[7]
        action_entropies[isa] = row_stats[3]
    # The Gaussian entropy of P dimensions: P * (1/2) log(2 pi e) + sum_j log_std_j.
    definition = (num_params * 0.5 * math.log(2 * math.pi * math.e) + log_std.double().sum((-2, -1))).to(dtype)
    for isa, values in action_entropies.items():
        torch.testing.assert_close(values, definition, rtol=8 * torch.finfo(dtype).eps, atol=0, msg=isa)
        assert torch.equal(values, action_entropies[SUPPORTED_CPU_ISAS[0]]), isa


@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
@pytest.mark.parametrize("logits_dtype, log_std_dtype", [
    (torch.float32, torch.float64), (torch.float64, torch.float32), (torch.bfloat16, torch.float64)], ids=str)
def test_action_entropies_are_summed_in_the_logits_accumulation_type(cpu_isa, logits_dtype, log_std_dtype, shared):
    # c sums each log-std converted to the logits' accumulation type (as the CUDA kernels do):
    # the log-stds given in that type (exactly, for these values) give the same bits of h_c.
    logits, log_std = heads((61,), 7, 3, torch.float64, shared=shared, seed=16)
    logits = logits.to(logits_dtype)
    log_std = log_std.to(log_std_dtype)
    acc_dtype = torch.float64 if logits_dtype == torch.float64 else torch.float32
    if log_std_dtype == torch.float64 and acc_dtype == torch.float32:
        log_std = log_std.float().double()  # values that float32 holds exactly
    h_c = OP(logits, log_std, torch.tensor(0.05), parameterized_actions=True)[7][3]
    h_c_of_converted = OP(logits, log_std.to(acc_dtype), torch.tensor(0.05), parameterized_actions=True)[7][3]
    assert torch.equal(h_c, h_c_of_converted)


def test_the_reference_matches_the_oracle():
    logits, log_std = heads((4, 9), 6, 2, torch.float64, seed=14)
    allowed = random_mask((4, 9, 6), seed=15)
    sample_mask = torch.arange(9) < torch.tensor([[9], [4], [1], [7]])
    got = reference.hybrid_entropy_loss(
        logits, log_std, 0.05, min_entropy_threshold=TAU_D, continuous_min_entropy_threshold=TAU_C,
        sample_mask=sample_mask, loss_agg_mode="seq-mean-token-mean", action_mask=allowed,
        parameterized_actions=True)
    want = parameterized_oracle(logits, log_std, allowed, sample_mask, "seq-mean-token-mean")
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14, msg=key)


# --- bad inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, match",
    [
        ((8, 6), r"second-to-last dim must be the logits' K = 5"),  # [B, D]: read as [K, P]
        ((8, 4, 3), r"log_std must be \[\.\.\., K, P\]"),       # K of 4, logits have 5
        ((7, 5, 3), r"log_std must be \[\.\.\., K, P\]"),       # another batch
        ((5,), r"log_std must be \[\.\.\., K, P\]"),
    ],
)
def test_a_log_std_of_another_shape_is_a_value_error(shape, match):
    with pytest.raises(ValueError, match=match):
        loss(torch.randn(8, 5), torch.zeros(shape))


@pytest.mark.parametrize(
    "log_std, match",
    [
        (torch.zeros(4, 3), r"second-to-last dim must be the logits' K = 5"),
        (torch.zeros(8, 5, 0), r"zero parameters per action"),
        (torch.zeros(7, 5, 3), r"same batch size"),
        (torch.zeros(8, 5, 3, 1), r"must be \[B, K, P\]"),
    ],
)
def test_the_op_checks_the_parameterized_log_std(log_std, match):
    with pytest.raises(ValueError, match=match):
        OP(torch.randn(8, 5), log_std, torch.tensor(0.01), parameterized_actions=True)


@pytest.mark.parametrize("missing", ["logits", "log_std"])
def test_a_missing_head_is_a_value_error(missing):
    logits, log_std = heads((8,), 5, 2)
    args = (None, log_std) if missing == "logits" else (logits, None)
    with pytest.raises(ValueError, match="parameterized_actions .* needs both heads"):
        loss(*args)


def test_sub_heads_cannot_be_combined_with_parameterized_actions():
    logits, log_std = heads((8,), 5, 2)
    with pytest.raises(ValueError, match="discrete_sizes .* cannot be combined"):
        loss(logits, log_std, discrete_sizes=[2, 3])
    with pytest.raises(ValueError, match="parameterized_actions: .*discrete_sizes"):
        hee.EntropyRegularizationConfig(parameterized_actions=True, discrete_sizes=(2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_parameterized_actions_on_cuda_match_the_oracle(shared):
    logits, log_std = heads((64,), 12, 3, shared=shared)
    allowed = random_mask((64, 12), seed=3)
    leaves = [logits.cuda().requires_grad_(True), log_std.cuda().requires_grad_(True)]
    got = loss(*leaves, action_mask=allowed.cuda())
    got_grads = torch.autograd.grad(weighted_output_sum(got), leaves)
    oracle_leaves = [logits.double().requires_grad_(True), log_std.double().requires_grad_(True)]
    want = parameterized_oracle(*oracle_leaves, allowed)
    want_grads = torch.autograd.grad(weighted_output_sum(want), oracle_leaves)
    value_tol, grad_tol = TOLERANCES[torch.float32]
    for key in KEYS:
        torch.testing.assert_close(got[key].cpu().double(), want[key].detach(), **value_tol, msg=key)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.cpu().double(), w, **grad_tol)


# --- the regularizer and its YAML key ----------------------------------------------------


def test_the_regularizer_reads_the_yaml_key():
    config = hee.EntropyRegularizationConfig.from_yaml("parameterized_actions: true\n")
    assert config.parameterized_actions is True
    assert "parameterized_actions: true" in config.to_yaml()
    logits, log_std = heads((12,), 4, 3, seed=17)
    regularizer = hee.HybridEntropyRegularizer(config)
    got = regularizer(logits, log_std, 0)
    want = hee.hybrid_entropy_loss(
        logits, log_std, regularizer.schedule(0), config.discrete_entropy_weight, config.continuous_entropy_weight,
        config.min_entropy_threshold, config.resolved_continuous_min_entropy_threshold, config.penalty_multiplier,
        parameterized_actions=True)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key
    scripted = torch.jit.script(regularizer)(logits, log_std, 0)
    for key in KEYS:
        assert torch.equal(scripted[key], got[key]), key


# --- PT2 and TorchScript -------------------------------------------------------------------


def _op_args(shared, weighted):
    logits, log_std = heads((9,), 5, 3, torch.float64, shared, seed=18)
    allowed = random_mask((9, 5), seed=19)
    weights = torch.rand(9, dtype=torch.float64) if weighted else None
    return (logits.requires_grad_(True), log_std.requires_grad_(True), torch.tensor(0.05, dtype=torch.float64),
            1.0, 0.5, TAU_D, TAU_C, 3.0, weights, None, allowed, None, None, False, True)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "row-weights"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_opcheck_passes(shared, weighted):
    torch.library.opcheck(OP, _op_args(shared, weighted))


@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_torch_compile_fullgraph_matches_eager(shared):
    logits, log_std = heads((3, 7), 5, 2, shared=shared, seed=20)

    def f(z, s):
        out = loss(z, s)
        return out["total"], out["continuous_entropy"]

    leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
    compiled_leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
    eager = f(*leaves)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(*compiled_leaves)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
    eager_grads = torch.autograd.grad(eager[0], leaves)
    compiled_grads = torch.autograd.grad(compiled[0], compiled_leaves)
    for a, b in zip(eager_grads, compiled_grads):
        assert torch.equal(a, b)


def test_torchscript_matches_eager():
    logits, log_std = heads((3, 7), 5, 2, seed=21)
    scripted = torch.jit.script(hee.hybrid_entropy_loss)
    got = scripted(logits, log_std, 0.05, parameterized_actions=True)
    want = hee.hybrid_entropy_loss(logits, log_std, 0.05, parameterized_actions=True)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key


def test_torch_export_with_a_dynamic_batch():
    class Loss(torch.nn.Module):
        def forward(self, logits, log_std):
            return hee.hybrid_entropy_loss(logits, log_std, 0.05, parameterized_actions=True)["total"]

    logits, log_std = heads((8,), 5, 3, seed=22)
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(Loss(), (logits, log_std), dynamic_shapes=({0: batch}, {0: batch}))
    other_logits, other_log_std = heads((13,), 5, 3, seed=23)
    assert torch.equal(program.module()(other_logits, other_log_std), Loss()(other_logits, other_log_std))
