"""``HybridEntropyRegularizer(distributed=True)``: two gloo processes on this machine.

Each rank holds a replica of a tiny policy (same initial parameters) and its own
slice of one global batch, 5 and 11 rows. The test holds the distributed run to
one process on the concatenated 16 rows: every rank's outputs equal the single
process's, and the ranks' parameter gradients averaged (what DistributedDataParallel
does) equal the single process's gradients. The batch is built so that rank 0's own
discrete entropy is above the threshold while the global one is below: rank 0
applies the penalty because the global batch calls for it.

The aggregation modes run on sequences ``[B, T]``, 2 on rank 0 and 3 on rank 1, with a
padding mask that masks one of rank 0's sequences entirely: every mode is held to one
process on the concatenated 5 sequences. Ranks may also differ: one passing no mask, or
rank 0's sequences shorter (no mask on either); the single process then takes the
concatenated sequences padded to T under a mask.
"""

from typing import Optional

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import hybrid_entropy_ext as hee
from hybrid_entropy_ext.ops.aggregation import LOSS_AGG_MODES

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)

WORLD_SIZE = 2
ROWS = (5, 11)
OBS, K, D = 4, 5, 3
THRESHOLD = 1.0  # nats: between rank 0's discrete entropy (1.58) and the global one (0.89)
NORMALIZED_THRESHOLD = 0.8  # between the normalized discrete entropy of rank 0 (0.99) and the global one (0.62)
CASES = (
    "per_sample_log_std",
    "shared_log_std",
    "discrete_only",
    "continuous_only_shared_log_std",  # a [D] log-std and no logits: one row per rank
    "controllers",  # a controller per head, a control step, a second call
    "compiled",  # the regularizer under torch.compile
    "action_mask",  # actions ruled out per row (by the row's observation)
    "discrete_sizes",  # two sub-heads (2 + 3 actions), each with its penalty, and the action mask
    "discrete_sizes_shared_log_std",  # the sub-heads beside a [D] log-std: every row counts it
    "normalized_entropy",  # normalize_discrete_entropy, with the action mask
    "parameterized_actions",  # each action its own log-stds [B, K, D], with the action mask
)


SEQUENCES = (2, 3)
TOKENS = 4
LENGTHS = (4, 0, 2, 3, 1)  # kept tokens per sequence; rank 0's second sequence is all padding
# (mode, mask: "bool" | "float" | None, shared log_std)
AGGREGATION_CASES = {
    **{f"{mode}, bool mask": (mode, "bool", False) for mode in LOSS_AGG_MODES},
    "token-mean, float mask": ("token-mean", "float", False),
    "seq-mean-token-mean, float mask": ("seq-mean-token-mean", "float", False),
    "seq-mean-token-sum-norm, shared log_std": ("seq-mean-token-sum-norm", "bool", True),
    "token-sum, no mask": ("token-sum", None, False),
    "seq-mean-token-mean, no mask": ("seq-mean-token-mean", None, False),
}
# Ranks that differ in T or in passing a mask, and the single-process equivalent on the
# concatenated sequences (padded to T with a mask): (mode, what differs). Rank 0's sequences
# have RAGGED_SHORT_T tokens where T differs.
RAGGED_CASES = {
    "seq-mean-token-mean, no mask on rank 0": ("seq-mean-token-mean", "mask"),
    "seq-mean-token-mean, ranks of different T": ("seq-mean-token-mean", "T"),
    "seq-mean-token-sum-norm, ranks of different T": ("seq-mean-token-sum-norm", "T"),
}
RAGGED_SHORT_T = 2


class Policy(nn.Module):
    def __init__(self, shared_log_std: bool) -> None:
        super().__init__()
        torch.manual_seed(0)  # every rank builds the same replica
        self.logits = nn.Linear(OBS, K).double()
        self.log_std_head = nn.Linear(OBS, D).double()
        self.shared_log_std = nn.Parameter(torch.tensor([-0.3, 0.1, 0.4], dtype=torch.float64))
        self.action_log_std = nn.Parameter(torch.linspace(-0.6, 0.6, K * D, dtype=torch.float64).reshape(K, D))
        self.shared = shared_log_std

    def forward(self, obs, with_log_std=True, parameterized=False):
        log_std = None
        if parameterized:  # [B, K, D]: each action's own parameters
            log_std = self.log_std_head(obs).unsqueeze(1) + self.action_log_std
        elif with_log_std:
            log_std = self.shared_log_std if self.shared else self.log_std_head(obs)
        return self.logits(obs), log_std


def global_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    obs = torch.randn(sum(ROWS), OBS, generator=generator, dtype=torch.float64)
    # Rank 0's rows near 0 (logits near the bias: high entropy), rank 1's large (confident).
    return torch.cat([0.05 * obs[: ROWS[0]], 6.0 * obs[ROWS[0]:]])


def rank_rows(rank: int) -> slice:
    start = sum(ROWS[:rank])
    return slice(start, start + ROWS[rank])


def run_case(case: str, obs: torch.Tensor, distributed: bool):
    policy = Policy(
        shared_log_std=case in ("shared_log_std", "continuous_only_shared_log_std", "discrete_sizes_shared_log_std")
    )
    controllers = {}
    if case == "controllers":
        controllers = {
            "discrete_controller": hee.TargetEntropyController(1.2, "adaptive", initial_coeff=0.2, delta=0.05),
            "continuous_controller": hee.TargetEntropyController(-1.0, "sac", initial_coeff=0.03),
        }
    sub_heads = {}
    if case in ("discrete_sizes", "discrete_sizes_shared_log_std"):
        # Each sub-head's threshold between its entropy on rank 0's rows (0.137, 0.844: above)
        # and on the global batch (0.095, 0.433: below): local means would turn neither on.
        sub_heads = {"discrete_sizes": [2, 3], "discrete_head_thresholds": [0.12, 0.6]}
    if case == "normalized_entropy":
        # The threshold between the normalized entropy on rank 0's rows (above) and globally.
        sub_heads = {"normalize_discrete_entropy": True, "min_entropy_threshold": NORMALIZED_THRESHOLD}
    if case == "parameterized_actions":
        sub_heads = {"parameterized_actions": True}
    regularizer = hee.HybridEntropyRegularizer(
        hee.EntropyRegularizationConfig.preset("long"),
        **{"min_entropy_threshold": THRESHOLD, **sub_heads},
        continuous_min_entropy_threshold=5.0,  # above H_c: the continuous penalty is on too
        distributed=distributed,
        **controllers,
    )
    call = regularizer
    if case == "compiled" and distributed:  # the reference: one eager process
        call = torch.compile(regularizer, backend="eager", fullgraph=True)
    logits, log_std = policy(obs, with_log_std=case != "discrete_only", parameterized=case == "parameterized_actions")
    if case == "continuous_only_shared_log_std":
        logits = None
    action_mask = None
    if case in ("action_mask", "discrete_sizes", "normalized_entropy", "parameterized_actions"):
        action_mask = torch.ones(obs.shape[0], K, dtype=torch.bool)
        action_mask[:, 1] = obs[:, 0] > 0
        action_mask[:, 3] = obs[:, 1] < 0
    out = call(logits, log_std, 100, action_mask=action_mask)
    loss = out["total"]
    if controllers:
        loss = loss + regularizer.controller_loss(out)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    grads.update({name: p.grad.clone() for name, p in regularizer.named_parameters() if p.grad is not None})
    result = {k: v.detach() for k, v in out.items()}
    if controllers:
        # The controllers see the global entropies: every rank's move alike.
        regularizer.update_controllers(out)
        result.update({"next/" + k: v.detach() for k, v in call(*policy(obs), 100).items()})
    return result, grads


def global_sequences():
    """Observations ``[5, T, OBS]`` and the padding mask ``[5, T]`` (bool), over both ranks."""
    generator = torch.Generator().manual_seed(2)
    obs = torch.randn(sum(SEQUENCES), TOKENS, OBS, generator=generator, dtype=torch.float64)
    mask = torch.arange(TOKENS) < torch.tensor(LENGTHS)[:, None]
    return obs, mask


def rank_sequences(rank: int) -> slice:
    start = sum(SEQUENCES[:rank])
    return slice(start, start + SEQUENCES[rank])


def run_aggregation_case(case: str, obs: torch.Tensor, mask: torch.Tensor, distributed: bool):
    mode, mask_kind, shared = AGGREGATION_CASES[case]
    if mask_kind == "float":
        # Weights that are a function of the position alone, so that a rank's slice of the
        # global weights is its own.
        mask = mask * (1.0 + torch.arange(TOKENS, dtype=torch.float64) / 3)
    policy = Policy(shared_log_std=shared)
    regularizer = hee.HybridEntropyRegularizer(
        hee.EntropyRegularizationConfig.preset("long"),
        min_entropy_threshold=THRESHOLD,
        continuous_min_entropy_threshold=5.0,
        loss_agg_mode=mode,
        distributed=distributed,
    )
    logits, log_std = policy(obs)
    out = regularizer(logits, log_std, 100, mask if mask_kind is not None else None)
    out["total"].backward()
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


def run_ragged_case(case: str, rank: Optional[int]):
    """``case`` of RAGGED_CASES on ``rank``'s sequences (distributed), or (``rank`` None) its
    single-process equivalent on all of them."""
    mode, differs = RAGGED_CASES[case]
    obs, padding = global_sequences()
    policy = Policy(shared_log_std=False)
    if rank is None:
        if differs == "mask":  # rank 0 passes no mask: its sequences are whole
            mask = padding.clone()
            mask[rank_sequences(0)] = True
        else:  # rank 0's sequences end at RAGGED_SHORT_T, and no rank passes a mask
            mask = torch.ones_like(padding)
            mask[rank_sequences(0), RAGGED_SHORT_T:] = False
        if mode == "seq-mean-token-sum-norm":
            # The default factor is each rank's own T: token weights 1 / T_own, no norm.
            own_t = torch.full((len(mask), 1), float(TOKENS), dtype=torch.float64)
            own_t[rank_sequences(0)] = RAGGED_SHORT_T
            mode, mask = "seq-mean-token-sum", mask / own_t
    else:
        obs = obs[rank_sequences(rank)]
        mask = padding[rank_sequences(rank)] if differs == "mask" and rank == 1 else None
        if differs == "T" and rank == 0:
            obs = obs[:, :RAGGED_SHORT_T]
    regularizer = hee.HybridEntropyRegularizer(
        hee.EntropyRegularizationConfig.preset("long"),
        min_entropy_threshold=THRESHOLD,
        continuous_min_entropy_threshold=5.0,
        loss_agg_mode=mode,
        distributed=rank is not None,
    )
    logits, log_std = policy(obs)
    out = regularizer(logits, log_std, 100, mask)
    out["total"].backward()
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


def _worker(rank: int, store: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        obs = global_batch()[rank_rows(rank)]
        outputs = {case: run_case(case, obs, distributed=True) for case in CASES}
        sequences, mask = (t[rank_sequences(rank)] for t in global_sequences())
        outputs.update(
            {case: run_aggregation_case(case, sequences, mask, distributed=True) for case in AGGREGATION_CASES}
        )
        outputs.update({case: run_ragged_case(case, rank) for case in RAGGED_CASES})
        torch.save(outputs, f"{results}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(str(folder / "store"), str(folder)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def test_the_batch_puts_rank_0_above_the_threshold_and_the_global_batch_below():
    obs = global_batch()
    local = run_case("per_sample_log_std", obs[rank_rows(0)], distributed=False)[0]
    single = run_case("per_sample_log_std", obs, distributed=False)[0]
    assert local["discrete_entropy"].item() > THRESHOLD > single["discrete_entropy"].item()
    assert local["discrete_penalty"].item() == 0.0 < single["discrete_penalty"].item()


@pytest.mark.parametrize("case", CASES)
def test_every_rank_returns_the_single_process_values_on_the_concatenated_batch(ranks, case):
    single, _ = run_case(case, global_batch(), distributed=False)
    for rank, results in enumerate(ranks):
        out, _ = results[case]
        assert set(out) == set(single)
        for key in single:
            torch.testing.assert_close(out[key], single[key], rtol=1e-12, atol=1e-14, msg=f"rank {rank}: {key}")


@pytest.mark.parametrize("case", CASES)
def test_gradients_averaged_over_ranks_are_the_single_process_gradients(ranks, case):
    _, single = run_case(case, global_batch(), distributed=False)
    per_rank = [results[case][1] for results in ranks]
    assert all(set(grads) == set(single) for grads in per_rank)
    for name in single:
        averaged = sum(grads[name] for grads in per_rank) / WORLD_SIZE
        torch.testing.assert_close(averaged, single[name], rtol=1e-10, atol=1e-13, msg=name)


def assert_ranks_match_the_single_process(ranks, case, single, single_grads):
    """Every rank's outputs are the single process's, and the ranks' gradients averaged its."""
    for rank, results in enumerate(ranks):
        out, _ = results[case]
        assert set(out) == set(single)
        for key in single:
            torch.testing.assert_close(out[key], single[key], rtol=1e-12, atol=1e-14, msg=f"rank {rank}: {key}")
    per_rank = [results[case][1] for results in ranks]
    for name in single_grads:
        averaged = sum(grads[name] for grads in per_rank) / WORLD_SIZE
        torch.testing.assert_close(averaged, single_grads[name], rtol=1e-10, atol=1e-13, msg=name)


@pytest.mark.parametrize("case", AGGREGATION_CASES)
def test_every_aggregation_mode_over_ranks_is_the_single_process_mode_on_the_concatenated_sequences(ranks, case):
    assert_ranks_match_the_single_process(ranks, case, *run_aggregation_case(case, *global_sequences(), distributed=False))


@pytest.mark.parametrize("case", RAGGED_CASES)
def test_ranks_of_different_lengths_or_masks_are_the_single_process_on_the_padded_sequences(ranks, case):
    assert_ranks_match_the_single_process(ranks, case, *run_ragged_case(case, None))


def test_distributed_without_a_process_group_is_a_runtime_error():
    assert not dist.is_initialized()
    regularizer = hee.HybridEntropyRegularizer(distributed=True)
    with pytest.raises(RuntimeError, match=r"torch.distributed is not initialized; call "
                                           r"torch.distributed.init_process_group first"):
        regularizer(torch.randn(4, 3), None, 0)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_scripted_distributed_regularizer_raises_when_called():
    scripted = torch.jit.script(hee.HybridEntropyRegularizer(distributed=True))
    with pytest.raises(torch.jit.Error):
        scripted(torch.randn(4, 3), None, 0)


def test_process_group_implies_distributed():
    assert hee.HybridEntropyRegularizer(process_group=object()).distributed
