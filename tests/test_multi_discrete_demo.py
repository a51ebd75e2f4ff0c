"""The multi-discrete demo: HybridNetworkGrowthMultiDiscrete-v0 (operation x edge kind), the PPO
agent's categorical sub-heads, the summed-entropy and per-sub-head penalties, and the
comparison script's sub-head columns."""

import csv
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

gym = pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from hybrid_entropy_ext import EntropyRegularizationConfig  # noqa: E402
from hybrid_entropy_ext.app.envs import (  # noqa: E402
    EDGE_KINDS,
    EDGE_OP,
    GREEDY_OP,
    MULTI_DISCRETE_NETWORK_GROWTH_ID,
    OPERATIONS,
    QUICK_KIND,
    TUNED_KIND,
    NetworkGrowthEnv,
)
from hybrid_entropy_ext.app.ppo import (  # noqa: E402
    METRIC_COLUMNS,
    HybridActorCritic,
    PPOHyperparameters,
    joint_logits,
    sub_head_entropies,
    sub_head_entropy_column,
    train,
)

REPO = Path(__file__).resolve().parents[1]
TARGET = np.array([0.6, -0.5], dtype=np.float32)
SIZES = [len(OPERATIONS), len(EDGE_KINDS)]  # [5, 2]
MULTI = PPOHyperparameters(env_id=MULTI_DISCRETE_NETWORK_GROWTH_ID)
EPISODES = 16  # two updates of 8 episodes
HEAD_COLUMNS = [sub_head_entropy_column(h) for h in range(len(SIZES))]


def edge(kind, params=TARGET):
    return np.array([EDGE_OP, kind]), params


# --- the environment ---------------------------------------------------------------------


def test_multi_discrete_variant_is_registered_and_passes_check_env_without_warnings():
    env = gym.make(MULTI_DISCRETE_NETWORK_GROWTH_ID)
    assert env.unwrapped.multi_discrete and not env.unwrapped.parameterized
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_multi_discrete_action_space_is_operation_times_edge_kind():
    space = NetworkGrowthEnv(multi_discrete=True).action_space
    assert isinstance(space, gym.spaces.Tuple) and len(space) == 2
    assert isinstance(space[0], gym.spaces.MultiDiscrete) and list(space[0].nvec) == [5, 2]
    assert isinstance(space[1], gym.spaces.Box) and space[1].shape == (2,)
    assert EDGE_KINDS[TUNED_KIND] == "tuned" and EDGE_KINDS[QUICK_KIND] == "quick"


def test_multi_discrete_episodes_are_deterministic_given_seed_and_actions():
    actions_rng = np.random.default_rng(5)
    actions = [(np.array([actions_rng.integers(5), actions_rng.integers(2)]), actions_rng.uniform(-1, 1, 2))
               for _ in range(32)]

    def trajectory(seed):
        env = NetworkGrowthEnv(multi_discrete=True)
        steps = [env.reset(seed=seed)[0]]
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
            steps += [obs, reward, terminated, truncated, info["structures_completed"], info["quick_edges"]]
        assert terminated and not truncated
        return steps

    a, b = trajectory(7), trajectory(7)
    assert len(a) == len(b) == 1 + 6 * 32
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_quick_edge_pays_at_once_and_its_structure_pays_nothing():
    env = NetworkGrowthEnv(multi_discrete=True, quick_reward=0.25)
    env.reset(seed=0)
    steps = [env.step(edge(QUICK_KIND)) for _ in range(3)]
    # At the target, yet quality 0: the completed structure adds nothing to the third 0.25.
    assert [step[1] for step in steps] == pytest.approx([0.25, 0.25, 0.25])
    assert steps[2][4]["structures_completed"] == 1 and steps[2][4]["quick_edges"] == 3


def test_tuned_edges_pay_as_in_the_plain_task():
    env = NetworkGrowthEnv(multi_discrete=True)
    env.reset(seed=0)
    rewards = [env.step(edge(TUNED_KIND))[1] for _ in range(3)]
    assert rewards[:2] == [0.0, 0.0] and rewards[2] == pytest.approx(3.0)


def test_a_quick_edge_dilutes_its_structure():
    env = NetworkGrowthEnv(multi_discrete=True, quick_reward=0.25)
    env.reset(seed=0)
    rewards = [env.step(edge(kind))[1] for kind in (TUNED_KIND, TUNED_KIND, QUICK_KIND)]
    assert rewards[2] == pytest.approx(0.25 + 3.0 * 2 / 3)


def test_rewire_gives_the_newest_pending_edge_its_kind_without_paying():
    env = NetworkGrowthEnv(multi_discrete=True, quick_reward=0.25)
    env.reset(seed=0)
    assert env.step(edge(QUICK_KIND))[1] == pytest.approx(0.25)
    obs, reward, *_ = env.step((np.array([4, TUNED_KIND]), TARGET))  # rewire it as a tuned edge
    assert reward == 0.0 and obs[4] == pytest.approx(1.0)
    obs, reward, *_ = env.step((np.array([4, QUICK_KIND]), TARGET))  # and back to quick
    assert reward == 0.0 and obs[4] == 0.0


def test_other_operations_ignore_the_edge_kind():
    env = NetworkGrowthEnv(multi_discrete=True)
    env.reset(seed=0)
    assert env.step((np.array([GREEDY_OP, QUICK_KIND]), TARGET))[1] == pytest.approx(0.1)
    assert env.step((np.array([0, QUICK_KIND]), TARGET))[1] == 0.0


@pytest.mark.parametrize("discrete, match", [(np.array([EDGE_OP, 2]), "action\\[0\\]\\[1\\]"),
                                              (np.array([9, 0]), "action\\[0\\]"),
                                              (EDGE_OP, "action\\[0\\]: expected \\(operation, edge kind\\)")])
def test_bad_multi_discrete_actions_raise(discrete, match):
    env = NetworkGrowthEnv(multi_discrete=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step((discrete, TARGET))


def test_multi_discrete_and_parameterized_do_not_combine():
    with pytest.raises(ValueError, match="multi_discrete"):
        NetworkGrowthEnv(parameterized=True, multi_discrete=True)


def test_multi_discrete_sync_vector_env_takes_one_row_per_env():
    n = 3
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(MULTI_DISCRETE_NETWORK_GROWTH_ID) for _ in range(n)])
    try:
        envs.reset(seed=[0, 1, 2])
        discrete = np.array([[EDGE_OP, QUICK_KIND], [EDGE_OP, TUNED_KIND], [GREEDY_OP, QUICK_KIND]])
        _, reward, *_ = envs.step((discrete, np.tile(TARGET, (n, 1))))
        assert reward == pytest.approx([0.17, 0.0, 0.1])
    finally:
        envs.close()


# --- the agent -----------------------------------------------------------------------------


def test_agent_log_prob_is_the_sum_of_the_sub_heads_categoricals_in_float64():
    torch.manual_seed(0)
    agent = HybridActorCritic(obs_size=7, num_ops=sum(SIZES), num_params=2, discrete_sizes=SIZES).double()
    obs = torch.rand(6, 7, dtype=torch.float64)
    op = torch.tensor([[0, 1], [4, 0], [2, 1], [2, 0], [1, 1], [3, 0]])
    params = torch.randn(6, 2, dtype=torch.float64)
    log_prob, _, logits, mean = agent.evaluate(obs, op, params)
    assert logits.shape == (6, 7) and log_prob.dtype == torch.float64
    operation = torch.distributions.Categorical(logits=logits[:, :5]).log_prob(op[:, 0])
    kind = torch.distributions.Categorical(logits=logits[:, 5:]).log_prob(op[:, 1])
    gaussian = torch.distributions.Normal(mean, agent.log_std.exp()).log_prob(params).sum(-1)
    torch.testing.assert_close(log_prob, operation + kind + gaussian, rtol=1e-12, atol=1e-12)


def test_agent_samples_each_sub_head_in_its_own_range():
    torch.manual_seed(0)
    agent = HybridActorCritic(obs_size=7, num_ops=7, num_params=2, discrete_sizes=SIZES)
    logits = torch.zeros(4000, 7)
    op = agent.sample_discrete(logits, torch.Generator().manual_seed(0))
    assert op.shape == (4000, 2)
    assert set(op[:, 0].tolist()) == set(range(5)) and set(op[:, 1].tolist()) == {0, 1}


def test_agent_rejects_sizes_that_do_not_sum_to_the_logits():
    with pytest.raises(ValueError, match="discrete_sizes"):
        HybridActorCritic(obs_size=7, num_ops=6, num_params=2, discrete_sizes=SIZES)


def test_joint_logits_entropy_is_the_sum_of_the_sub_heads_entropies_in_float64():
    logits = torch.randn(9, 7, dtype=torch.float64)
    joint = joint_logits(logits, SIZES)
    assert joint.shape == (9, 10)
    want = sum(torch.distributions.Categorical(logits=part).entropy() for part in logits.split(SIZES, -1))
    torch.testing.assert_close(torch.distributions.Categorical(logits=joint).entropy(), want)
    # Row-major combinations: entry (k_1, k_2) is log p_1(k_1) + log p_2(k_2).
    k1, k2 = 3, 1
    log_p = [torch.log_softmax(part, -1) for part in logits.split(SIZES, -1)]
    torch.testing.assert_close(joint[:, k1 * 2 + k2], log_p[0][:, k1] + log_p[1][:, k2])


def test_sub_head_entropies_are_each_sub_heads_batch_mean_in_float64():
    logits = torch.randn(9, 7, dtype=torch.float64)
    log_p = [torch.log_softmax(part, -1) for part in logits.split(SIZES, -1)]
    want = torch.stack([-(part.exp() * part).sum(-1).mean() for part in log_p])
    torch.testing.assert_close(sub_head_entropies(logits, SIZES), want)


# --- training --------------------------------------------------------------------------------


MULTIPLIER = 30.0  # large, so that the penalty's pull outweighs the policy gradient's in two updates


def summed(**overrides):
    # Coefficient 0 and a 1-nat threshold: above H_kind <= log 2 = 0.69, below H_op + H_kind
    # (about 2.3 at the start): only a penalty per sub-head is active.
    return EntropyRegularizationConfig(enable_adaptive_entropy=False, entropy_coeff=0.0, min_entropy_threshold=1.0,
                                       continuous_min_entropy_threshold=None, penalty_multiplier=MULTIPLIER,
                                       **overrides)


@pytest.fixture(scope="module")
def per_head_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("per_head")
    return train(summed(discrete_sizes=SIZES), EPISODES, seed=0, out_dir=out, hyperparameters=MULTI)


def test_a_per_sub_head_run_logs_each_sub_heads_entropy(per_head_run):
    with open(per_head_run.csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    assert header == [*METRIC_COLUMNS, *HEAD_COLUMNS] and len(rows) == 2
    for row in per_head_run.metrics:
        assert 0 < row[HEAD_COLUMNS[0]] <= math.log(5) + 1e-6 and 0 < row[HEAD_COLUMNS[1]] <= math.log(2) + 1e-6
        assert row["discrete_entropy"] == pytest.approx(row[HEAD_COLUMNS[0]] + row[HEAD_COLUMNS[1]], rel=1e-5)


def test_a_per_sub_head_penalty_acts_on_the_sub_head_the_sum_hides(per_head_run):
    sum_run = train(summed(), EPISODES, seed=0, hyperparameters=MULTI)
    assert sum_run.metrics[0]["mean_return"] == per_head_run.metrics[0]["mean_return"]  # same first rollout
    for row in sum_run.metrics:
        assert row["discrete_entropy"] > 1.0 and row["discrete_penalty"] == 0.0
    first = per_head_run.metrics[0]
    assert first[HEAD_COLUMNS[0]] > 1.0 > first[HEAD_COLUMNS[1]]
    # Only the kind head is below the threshold, on every step: m * (1 - H_kind), averaged.
    assert first["discrete_penalty"] == pytest.approx(MULTIPLIER * (1.0 - first[HEAD_COLUMNS[1]]), rel=1e-5)
    # The penalty holds the kind head's entropy up: by update 2 it is above the unpenalized run's.
    assert per_head_run.metrics[1][HEAD_COLUMNS[1]] > sum_run.metrics[1][HEAD_COLUMNS[1]]


def test_a_summed_run_gives_the_regularizer_the_sum_of_the_sub_heads_entropies():
    config = EntropyRegularizationConfig.preset("long")
    metrics = train(config, 8, seed=1, hyperparameters=MULTI).metrics
    # The per-sub-head columns are measured apart from the regularizer (it has no sub-heads here).
    assert metrics[0]["discrete_entropy"] == pytest.approx(
        metrics[0][HEAD_COLUMNS[0]] + metrics[0][HEAD_COLUMNS[1]], rel=1e-5)
    # More than one categorical over the 7 logit columns can hold: the sub-heads' sum.
    assert metrics[0]["discrete_entropy"] > math.log(7)


@pytest.mark.parametrize("env_id, sizes", [("HybridNetworkGrowth-v0", SIZES),
                                           (MULTI_DISCRETE_NETWORK_GROWTH_ID, [2, 5])])
def test_discrete_sizes_must_be_the_environments_nvec(env_id, sizes):
    config = EntropyRegularizationConfig(discrete_sizes=sizes)
    with pytest.raises(ValueError, match="discrete_sizes: .* not the sub-heads of"):
        train(config, 8, seed=0, hyperparameters=PPOHyperparameters(env_id=env_id))


# --- the comparison script ---------------------------------------------------------------------


def test_compare_collapse_reports_each_sub_heads_final_entropy(tmp_path):
    spec = importlib.util.spec_from_file_location("compare_collapse", REPO / "examples" / "compare_collapse.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    configs = [str(REPO / "examples/configs/multi_discrete_summed.yaml"),
               str(REPO / "examples/configs/multi_discrete_per_head.yaml")]
    assert compare.main(["--env", MULTI_DISCRETE_NETWORK_GROWTH_ID, "--configs", *configs, "--episodes", "8",
                         "--seeds", "0", "--out", str(tmp_path), "--name", "md"]) == 0
    text = (tmp_path / "md.md").read_text()
    assert "| final H_0 (sub-head 0) | final H_1 (sub-head 1) |" in text
    summary = [line for line in text.splitlines() if line.startswith("| adaptive + a penalty per sub-head")]
    assert len(summary) == 2  # the summary's row and the per-seed row
    assert (tmp_path / "md.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
