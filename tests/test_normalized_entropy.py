"""``hee.hybrid_entropy_loss(..., normalize_discrete_entropy=True)``: each row's (sub-)head
entropy divided by the log of its number of allowed actions ``n`` (0 where ``n <= 1``), so that
discrete entropies and their thresholds are fractions of the maximum (the function's
docstring, docs/design.md "Normalized entropy").

Values and gradients are held to a float64 oracle written from the definition:
``Categorical`` entropies of the ``-inf`` form of the action mask, each divided by
``log n`` with ``n`` counted from the mask, then the loss formula (tests/oracle.py's
``combine``, or ``sub_heads_oracle``'s per-sub-head penalties). Kernel tests run once per CPU
kernel build; the CUDA kernels are held to the CPU op by tests/test_cuda_emulated.py on the
host and by a test here where a GPU is present.
"""

import math

import pytest
import torch

import hybrid_entropy_ext as hee
from hybrid_entropy_ext import reference
from common_utils import seeded_heads
from oracle import KEYS, categorical_entropies, combine, normal_entropies, weighted_output_sum

INF = math.inf
ROWS = 37
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
TOLERANCES = {
    torch.float64: (dict(rtol=1e-10, atol=1e-12), dict(rtol=1e-9, atol=1e-12)),
    torch.float32: (dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-4, atol=1e-7)),
    torch.bfloat16: (dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-2, atol=1e-5)),
    torch.float16: (dict(rtol=1e-5, atol=1e-6), dict(rtol=2e-3, atol=1e-6)),
}


def normalized_oracle(logits, log_std, allowed, sizes, thresholds, coeff=0.05, multiplier=3.0):
    """The seven outputs (and the per-sub-head entropies) with normalized discrete entropies,
    in float64: sub-head h of row i contributes h_Categorical / log(n_ih), 0 where n_ih <= 1."""
    z = logits.double()
    if allowed is not None:
        z = z.masked_fill(~allowed, -INF)
    mask = torch.ones_like(z, dtype=torch.bool) if allowed is None else allowed
    head_entropies = []
    for z_h, mask_h in zip(torch.split(z, sizes, dim=-1), torch.split(mask, sizes, dim=-1)):
        count = mask_h.sum(dim=-1).double()
        per_row = categorical_entropies(z_h)
        normalized = torch.where(count > 1, per_row / torch.log(count.clamp(min=2.0)), torch.zeros_like(per_row))
        head_entropies.append(normalized.mean())
    h_d = sum(head_entropies[1:], head_entropies[0])
    h_c = normal_entropies(log_std).mean()
    out = combine(h_d, h_c, coeff, 1.0, 0.5, None, 10.0, multiplier, True, True)
    penalty = sum(multiplier * torch.relu(tau - h) for h, tau in zip(head_entropies, thresholds))
    out["total"] = out["discrete"] + out["continuous"] + penalty + out["continuous_penalty"]
    out["discrete_penalty"] = penalty
    out["discrete_entropy_per_head"] = torch.stack(head_entropies)
    return out


def random_mask(rows, k, seed):
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.rand(rows, k, generator=generator) < 0.6
    allowed[:3] = False       # nothing allowed: entropy 0
    allowed[3:6, :] = False
    allowed[3:6, 0] = True    # one action allowed: nothing to normalize, 0
    return allowed


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "action-mask"])
@pytest.mark.parametrize("sizes", [[10], [3, 5, 2], [1, 40]], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_and_gradients_match_the_normalized_oracle(cpu_isa, dtype, sizes, masked):
    k = sum(sizes)
    logits, log_std = seeded_heads(ROWS, k, dtype=dtype, seed=k)
    allowed = random_mask(ROWS, k, seed=k) if masked else None
    thresholds = [0.9 if h % 2 == 0 else 0.1 for h in range(len(sizes))]
    kwargs = dict(discrete_sizes=sizes, discrete_head_thresholds=thresholds) if len(sizes) > 1 else dict(
        min_entropy_threshold=thresholds[0])
    leaves = [logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)]
    got = hee.hybrid_entropy_loss(
        *leaves, 0.05, continuous_min_entropy_threshold=10.0, action_mask=allowed, normalize_discrete_entropy=True,
        **kwargs)
    got_grads = torch.autograd.grad(weighted_output_sum(got), leaves)

    oracle_leaves = [logits.double().requires_grad_(True), log_std.double().requires_grad_(True)]
    want = normalized_oracle(*oracle_leaves, allowed, sizes, thresholds)
    want_grads = torch.autograd.grad(weighted_output_sum(want), oracle_leaves)

    value_tol, grad_tol = TOLERANCES[dtype]
    keys = KEYS + (("discrete_entropy_per_head",) if len(sizes) > 1 else ())
    for key in keys:
        torch.testing.assert_close(got[key].double(), want[key].detach(), **value_tol, msg=key)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.double(), w, **grad_tol)


@pytest.mark.parametrize("allowed_count", [2, 5, 16])
def test_a_uniform_policy_over_its_allowed_actions_has_normalized_entropy_1(allowed_count):
    allowed = torch.zeros(8, 16, dtype=torch.bool)
    allowed[:, :allowed_count] = True
    out = hee.hybrid_entropy_loss(torch.zeros(8, 16), None, 0.0, action_mask=allowed, normalize_discrete_entropy=True)
    assert out["discrete_entropy"].item() == pytest.approx(1.0, rel=1e-6)


def test_rows_with_at_most_one_allowed_action_give_0_and_gradient_0():
    logits = torch.randn(4, 6, requires_grad=True)
    allowed = torch.zeros(4, 6, dtype=torch.bool)
    allowed[1, 2] = True
    out = hee.hybrid_entropy_loss(
        logits, None, 0.05, action_mask=allowed, normalize_discrete_entropy=True, min_entropy_threshold=0.5)
    (grad,) = torch.autograd.grad(out["total"], logits)
    assert out["discrete_entropy"].item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_without_normalization_the_op_is_unchanged():
    logits, log_std = seeded_heads(ROWS, 9)
    plain = hee.hybrid_entropy_loss(logits, log_std, 0.05)
    off = hee.hybrid_entropy_loss(logits, log_std, 0.05, normalize_discrete_entropy=False)
    for key in KEYS:
        assert torch.equal(plain[key], off[key]), key


def test_the_reference_matches_the_oracle():
    sizes = [3, 5, 2]
    logits, log_std = seeded_heads(ROWS, 10, dtype=torch.float64, seed=21)
    allowed = random_mask(ROWS, 10, seed=22)
    got = reference.hybrid_entropy_loss(
        logits, log_std, 0.05, continuous_min_entropy_threshold=10.0, action_mask=allowed, discrete_sizes=sizes,
        discrete_head_thresholds=[0.9, 0.1, 0.9], normalize_discrete_entropy=True)
    want = normalized_oracle(logits, log_std, allowed, sizes, [0.9, 0.1, 0.9])
    for key in KEYS + ("discrete_entropy_per_head",):
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14, msg=key)


def test_the_regularizer_reads_the_yaml_key():
    config = hee.EntropyRegularizationConfig.from_yaml("normalize_discrete_entropy: true\nmin_entropy_threshold: 0.5\n")
    assert config.normalize_discrete_entropy is True
    assert "normalize_discrete_entropy: true" in config.to_yaml()
    logits, log_std = seeded_heads(ROWS, 6, seed=23)
    regularizer = hee.HybridEntropyRegularizer(config)
    got = regularizer(logits, log_std, 0)
    want = hee.hybrid_entropy_loss(
        logits, log_std, regularizer.schedule(0), config.discrete_entropy_weight, config.continuous_entropy_weight,
        0.5, 0.5, config.penalty_multiplier, normalize_discrete_entropy=True)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key
    scripted = torch.jit.script(regularizer)(logits, log_std, 0)
    for key in KEYS:
        assert torch.equal(scripted[key], got[key]), key


def test_opcheck_passes_with_normalization():
    logits, log_std = seeded_heads(6, 7, dtype=torch.float64)
    allowed = random_mask(6, 7, seed=3)
    args = (
        logits.requires_grad_(True), log_std.requires_grad_(True), torch.tensor(0.05, dtype=torch.float64),
        1.0, 0.5, 0.9, 0.1, 3.0, None, None, allowed, [3, 4], None, True,
    )
    torch.library.opcheck(torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default, args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "action-mask"])
def test_normalization_on_cuda_matches_the_cpu_op(masked):
    logits, log_std = seeded_heads(64, 7)
    allowed = torch.rand(64, 7, generator=torch.Generator().manual_seed(1)) < 0.6 if masked else None
    leaves = [t.clone().requires_grad_(True) for t in (logits, log_std)]
    cuda_leaves = [t.cuda().requires_grad_(True) for t in (logits, log_std)]
    want = hee.hybrid_entropy_loss(*leaves, 0.01, action_mask=allowed, normalize_discrete_entropy=True)
    got = hee.hybrid_entropy_loss(*cuda_leaves, 0.01, normalize_discrete_entropy=True,
                                  action_mask=None if allowed is None else allowed.cuda())
    for key, value in want.items():
        torch.testing.assert_close(got[key].cpu(), value, rtol=1e-5, atol=1e-6, msg=key)
    for g, w in zip(torch.autograd.grad(got["total"], cuda_leaves), torch.autograd.grad(want["total"], leaves)):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-4, atol=1e-7)
