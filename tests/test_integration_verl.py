"""``hybrid_entropy_ext.integrations.verl``: drop-ins for verl's entropy functions, held to
their definitions.

verl 0.9.1 imports only with its heavy dependencies (ray among them), which CI does not
install, so its definitions are written out below: ``entropy_from_logits`` is each row's
entropy, and ``compute_entropy_loss`` aggregates the token entropies with ``agg_loss`` (one
process: ``dp_size`` 1, no global counts), whose five modes are transcribed in
:func:`agg_loss`. The entropies come from ``torch.distributions.Categorical`` in float64,
the gradients from autograd through them. Where verl imports, the drop-ins are also
compared with verl's own functions and patched into it.
"""

import pytest
import torch
from torch.distributions import Categorical

from hybrid_entropy_ext.integrations import verl as hee_verl

MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean")
ATOL = 2e-5


def agg_loss(loss_mat, loss_mask, loss_agg_mode):
    """verl's ``agg_loss`` with ``dp_size=1`` and its other arguments at their defaults."""
    loss_mask = loss_mask.to(loss_mat.dtype)
    if loss_agg_mode == "token-mean":
        return (loss_mat * loss_mask).sum() / loss_mask.sum()
    if loss_agg_mode == "token-sum":
        return (loss_mat * loss_mask).sum()
    if loss_agg_mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1)
        seq_mask = (torch.sum(loss_mask, dim=-1) > 0).to(loss_mat.dtype)
        loss = (seq_losses * seq_mask).sum() / seq_mask.sum()
        if loss_agg_mode == "seq-mean-token-sum-norm":
            loss = loss / loss_mask.shape[-1]
        return loss
    if loss_agg_mode == "seq-mean-token-mean":
        seq_counts = torch.sum(loss_mask, dim=-1)
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1) / (seq_counts + 1e-8)
        seq_mask = (seq_counts > 0).to(loss_mat.dtype)
        return (seq_losses * seq_mask).sum() / seq_mask.sum()
    raise ValueError(loss_agg_mode)


def verl_entropy_loss(logits, response_mask, loss_agg_mode):
    return agg_loss(Categorical(logits=logits.double()).entropy(), response_mask, loss_agg_mode)


def responses(dtype=torch.float32, batch=4, length=9, vocab=40, seed=0):
    """Logits ``[B, T, V]`` and a response mask ``[B, T]`` of responses of different lengths,
    one of them empty."""
    generator = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(batch, length, vocab, generator=generator)).to(dtype)
    lengths = torch.tensor([length, 5, 0, 2][:batch])
    return logits, torch.arange(length) < lengths.unsqueeze(-1)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.bfloat16), ids=str)
def test_entropy_from_logits_gives_each_rows_entropy_in_the_logits_dtype(dtype):
    logits, _ = responses(dtype)
    entropy = hee_verl.entropy_from_logits(logits)
    assert entropy.dtype == dtype and entropy.shape == logits.shape[:-1]
    expected = Categorical(logits=logits.double()).entropy()
    tolerance = ATOL if dtype != torch.bfloat16 else 2e-2  # one bfloat16 rounding of the result
    torch.testing.assert_close(entropy.double(), expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float64), ids=str)
def test_entropy_from_logits_with_chunking_gives_float32_entropies(dtype):
    logits = torch.randn(10, 40, dtype=dtype)
    entropy = hee_verl.entropy_from_logits_with_chunking(logits, chunk_size=3)
    assert entropy.dtype == torch.float32
    torch.testing.assert_close(entropy.double(), Categorical(logits=logits.double()).entropy(), atol=ATOL, rtol=0)


def test_entropy_of_a_row_with_impossible_tokens_is_finite():
    logits = torch.tensor([[0.0, 0.0, float("-inf")]])
    torch.testing.assert_close(hee_verl.entropy_from_logits(logits), torch.tensor([0.6931472]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mask_dtype", (torch.bool, torch.int64, torch.float32), ids=str)
def test_compute_entropy_loss_matches_verls_aggregation(mode, mask_dtype):
    logits, response_mask = responses()
    response_mask = response_mask.to(mask_dtype)
    loss = hee_verl.compute_entropy_loss(logits, response_mask, mode)
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss.double(), verl_entropy_loss(logits, response_mask, mode), atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_compute_entropy_loss_gradient_matches_verls(mode):
    logits, response_mask = responses(torch.float64)
    mine = logits.clone().requires_grad_(True)
    hee_verl.compute_entropy_loss(mine, response_mask, mode).backward()
    theirs = logits.clone().requires_grad_(True)
    verl_entropy_loss(theirs, response_mask, mode).backward()
    torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-9, rtol=1e-6)
    assert torch.all(mine.grad[~response_mask] == 0)


def test_compute_entropy_loss_weighs_tokens_by_a_float_mask():
    logits, response_mask = responses()
    weights = response_mask.float() * torch.linspace(0.5, 2.0, logits.shape[1])
    torch.testing.assert_close(
        hee_verl.compute_entropy_loss(logits, weights, "token-mean").double(),
        verl_entropy_loss(logits, weights, "token-mean"),
        atol=ATOL,
        rtol=1e-6,
    )


def test_compute_entropy_loss_token_mean_of_an_empty_mask_is_nan_as_verls():
    logits, response_mask = responses()
    assert torch.isnan(hee_verl.compute_entropy_loss(logits, torch.zeros_like(response_mask), "token-mean"))


def test_compute_entropy_loss_rejects_an_unknown_mode():
    logits, response_mask = responses()
    with pytest.raises(ValueError, match="loss_agg_mode"):
        hee_verl.compute_entropy_loss(logits, response_mask, "seq-sum")


# --------------------------------------------------------------------------------------
# Against verl itself, where it imports
# --------------------------------------------------------------------------------------


@pytest.fixture
def torch_functional():
    return pytest.importorskip("verl.utils.torch_functional", reason="verl does not import here")


@pytest.fixture
def core_algos():
    return pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl does not import here")


@pytest.mark.parametrize("mode", MODES)
def test_compute_entropy_loss_matches_verls_own(core_algos, mode):
    logits, response_mask = responses()
    mine = logits.clone().requires_grad_(True)
    theirs = logits.clone().requires_grad_(True)
    loss = hee_verl.compute_entropy_loss(mine, response_mask.float(), mode)
    expected = core_algos.compute_entropy_loss(theirs, response_mask.float(), mode)
    torch.testing.assert_close(loss, expected, atol=ATOL, rtol=1e-5)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-6, rtol=1e-4)


def test_entropy_from_logits_matches_verls_own(torch_functional):
    logits, _ = responses()
    torch.testing.assert_close(
        hee_verl.entropy_from_logits(logits), torch_functional.entropy_from_logits(logits), atol=ATOL, rtol=0
    )
    torch.testing.assert_close(
        hee_verl.entropy_from_logits_with_chunking(logits.view(-1, logits.shape[-1])),
        torch_functional.entropy_from_logits_with_chunking(logits.view(-1, logits.shape[-1])),
        atol=ATOL,
        rtol=0,
    )


def test_apply_to_verl_replaces_the_functions_and_undo_restores_them(torch_functional, core_algos):
    originals = (torch_functional.entropy_from_logits, core_algos.compute_entropy_loss)
    with hee_verl.apply_to_verl():
        assert torch_functional.entropy_from_logits is hee_verl.entropy_from_logits
        assert core_algos.compute_entropy_loss is hee_verl.compute_entropy_loss
    assert (torch_functional.entropy_from_logits, core_algos.compute_entropy_loss) == originals
