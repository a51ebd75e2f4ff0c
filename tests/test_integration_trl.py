"""``hybrid_entropy_ext.integrations.trl``: drop-ins for TRL's log-probability and entropy
functions, held to their contracts.

The contracts, written out from TRL 1.16 (``trl.kernels.selective_log_softmax_and_entropy``
and ``trl.trainer.utils``' functions): the log-probability of the selected token and the
entropy of ``softmax(logits / T)``, both 0 in rows where the row mask is 0, float32
outputs. The oracle is ``torch.distributions.Categorical`` in float64 with autograd for the
gradients. Where TRL imports (not in CI: it pulls transformers and datasets), the drop-ins
are also compared with TRL's own functions and patched into TRL.
"""

import pytest
import torch
from torch.distributions import Categorical

from hybrid_entropy_ext.integrations import trl as hee_trl

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Outputs are float32 whatever the logits (accumulated in float32, float64 for float64).
ATOL = 2e-5


def trl_oracle(logits, index, temperature=1.0, row_mask=None):
    """TRL's two outputs in float64 from ``Categorical``: 0 where ``row_mask`` is 0."""
    policy = Categorical(logits=logits.double() / temperature)
    log_probs, entropy = policy.log_prob(index), policy.entropy()
    if row_mask is not None:
        kept = row_mask != 0
        log_probs = torch.where(kept, log_probs, torch.zeros_like(log_probs))
        entropy = torch.where(kept, entropy, torch.zeros_like(entropy))
    return log_probs, entropy


def random_problem(dtype=torch.float32, shape=(3, 5), vocab=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(*shape, vocab, generator=generator)).to(dtype)
    index = torch.randint(0, vocab, shape, generator=generator)
    row_mask = (torch.rand(shape, generator=generator) < 0.7).long()
    return logits, index, row_mask


def gradient_of(function, logits, *args, weights=(1.0, -0.3)):
    """The logits' gradient of ``w0 * sum(log_probs) + w1 * sum(entropy)``, in float64."""
    logits = logits.detach().clone().requires_grad_(True)
    log_probs, entropy = function(logits, *args)
    (weights[0] * log_probs.sum() + weights[1] * entropy.sum()).backward()
    return logits.grad.double()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_kernel_drop_in_matches_the_oracle_with_temperature_and_row_mask(dtype):
    logits, index, row_mask = random_problem(dtype)
    log_probs, entropy = hee_trl.selective_log_softmax_and_entropy(logits, index, 0.7, row_mask)
    expected_log_probs, expected_entropy = trl_oracle(logits, index, 0.7, row_mask)
    assert log_probs.dtype == entropy.dtype == torch.float32
    assert log_probs.shape == entropy.shape == index.shape
    torch.testing.assert_close(log_probs.double(), expected_log_probs, atol=ATOL, rtol=0)
    torch.testing.assert_close(entropy.double(), expected_entropy, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
def test_fused_kernel_drop_in_gradient_matches_the_oracle(dtype):
    logits, index, row_mask = random_problem(dtype)
    grad = gradient_of(hee_trl.selective_log_softmax_and_entropy, logits, index, 0.7, row_mask)
    expected = gradient_of(trl_oracle, logits.double(), index, 0.7, row_mask)
    torch.testing.assert_close(grad, expected, atol=ATOL, rtol=0)


def test_rows_the_mask_drops_are_not_read_and_get_zero_gradient():
    logits, index, row_mask = random_problem()
    logits[row_mask == 0] = float("nan")
    index[row_mask == 0] = -7  # out of range, but never looked at
    grad = gradient_of(hee_trl.selective_log_softmax_and_entropy, logits, index, 1.0, row_mask)
    log_probs, entropy = hee_trl.selective_log_softmax_and_entropy(logits, index, 1.0, row_mask)
    dropped = row_mask == 0
    assert torch.all(log_probs[dropped] == 0) and torch.all(entropy[dropped] == 0)
    assert torch.isfinite(log_probs).all() and torch.isfinite(entropy).all()
    assert torch.all(grad[dropped] == 0)


@pytest.mark.parametrize("mask_dtype", (torch.bool, torch.int32, torch.int64, torch.float32), ids=str)
def test_row_mask_of_any_dtype_drops_the_rows_where_it_is_zero(mask_dtype):
    logits, index, row_mask = random_problem()
    as_bool = hee_trl.selective_log_softmax_and_entropy(logits, index, 1.0, row_mask.bool())
    other = hee_trl.selective_log_softmax_and_entropy(logits, index, 1.0, row_mask.to(mask_dtype))
    assert torch.equal(as_bool[0], other[0]) and torch.equal(as_bool[1], other[1])


@pytest.mark.parametrize("temperature", (0.0, -1.0, float("nan"), float("inf")))
def test_a_temperature_that_is_not_positive_and_finite_is_a_value_error(temperature):
    logits, index, _ = random_problem()
    with pytest.raises(ValueError, match="temperature"):
        hee_trl.selective_log_softmax_and_entropy(logits, index, temperature)


def test_a_token_outside_the_vocabulary_is_an_index_error():
    logits, index, _ = random_problem()
    index[1, 2] = 50
    with pytest.raises(IndexError):
        hee_trl.selective_log_softmax_and_entropy(logits, index)


def test_selective_log_softmax_of_one_token_per_row_is_the_fused_log_probability():
    logits, index, row_mask = random_problem()
    log_probs = hee_trl.selective_log_softmax(logits, index, 0.5, row_mask)
    torch.testing.assert_close(log_probs.double(), trl_oracle(logits, index, 0.5, row_mask)[0], atol=ATOL, rtol=0)


def test_selective_log_softmax_of_several_tokens_per_row_gathers_each():
    logits, _, row_mask = random_problem()
    top = torch.topk(logits, 3, dim=-1).indices  # [3, 5, 3]
    log_probs = hee_trl.selective_log_softmax(logits, top, 0.5, row_mask.unsqueeze(-1).expand_as(top))
    expected = torch.stack(
        [trl_oracle(logits, top[..., j], 0.5, row_mask)[0] for j in range(3)], dim=-1
    )
    assert log_probs.shape == top.shape
    torch.testing.assert_close(log_probs.double(), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("shape", [(7,), (4, 6), (2, 3, 5)], ids=str)
def test_entropy_from_logits_gives_each_row_its_entropy(shape):
    logits = torch.randn(*shape, 30)
    entropy = hee_trl.entropy_from_logits(logits, chunk_size=2)
    assert entropy.shape == shape
    torch.testing.assert_close(entropy.double(), Categorical(logits=logits.double()).entropy(), atol=ATOL, rtol=0)


def test_trainer_utils_variant_detaches_the_entropy_when_asked():
    logits, index, row_mask = random_problem()
    logits.requires_grad_(True)
    log_probs, entropy = hee_trl.selective_log_softmax_and_entropy_of_trainer_utils(
        logits, index, entropy_requires_grad=False, temperature=0.7, row_mask=row_mask
    )
    assert not entropy.requires_grad and log_probs.requires_grad
    expected_log_probs, expected_entropy = trl_oracle(logits.detach(), index, 0.7, row_mask)
    torch.testing.assert_close(entropy.double(), expected_entropy, atol=ATOL, rtol=0)
    log_probs.sum().backward()
    expected_grad = gradient_of(trl_oracle, logits.detach().double(), index, 0.7, row_mask, weights=(1.0, 0.0))
    torch.testing.assert_close(logits.grad.double(), expected_grad, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------
# Against TRL itself, where it imports
# --------------------------------------------------------------------------------------


@pytest.fixture
def trl_utils():
    return pytest.importorskip("trl.trainer.utils", reason="TRL is not installed (pip install trl)")


def test_drop_ins_match_trls_own_functions(trl_utils):
    logits, index, row_mask = random_problem()
    ours = hee_trl.selective_log_softmax_and_entropy_of_trainer_utils(logits, index, True, 0.7, row_mask)
    theirs = trl_utils.selective_log_softmax_and_entropy(logits, index, True, 0.7, row_mask)
    for mine, their in zip(ours, theirs):
        torch.testing.assert_close(mine, their.float(), atol=ATOL, rtol=0)
    torch.testing.assert_close(
        hee_trl.entropy_from_logits(logits), trl_utils.entropy_from_logits(logits), atol=ATOL, rtol=0
    )
    torch.testing.assert_close(
        hee_trl.selective_log_softmax(logits, index, 0.7, row_mask),
        trl_utils.selective_log_softmax(logits, index, 0.7, row_mask),
        atol=ATOL,
        rtol=0,
    )


def test_apply_to_trl_replaces_the_functions_where_trl_binds_them_and_undo_restores_them(trl_utils):
    # A module of TRL's that imports selective_log_softmax by name.
    sdpo_loss_utils = pytest.importorskip("trl.experimental.sdpo.loss_utils")
    originals = (trl_utils.selective_log_softmax, trl_utils.entropy_from_logits)
    patches = hee_trl.apply_to_trl()
    try:
        assert trl_utils.selective_log_softmax is hee_trl.selective_log_softmax
        assert trl_utils.entropy_from_logits is hee_trl.entropy_from_logits
        assert sdpo_loss_utils.selective_log_softmax is hee_trl.selective_log_softmax
        assert (
            trl_utils.selective_log_softmax_and_entropy
            is hee_trl.selective_log_softmax_and_entropy_of_trainer_utils
        )
    finally:
        patches.undo()
    assert (trl_utils.selective_log_softmax, trl_utils.entropy_from_logits) == originals
    assert sdpo_loss_utils.selective_log_softmax is originals[0]
