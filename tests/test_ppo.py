"""The hybrid PPO trainer: tiny runs, their CSV, determinism, the regularizer in the loss."""

import csv
import math

import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

from hybrid_entropy_ext import EntropyRegularizationConfig  # noqa: E402
from hybrid_entropy_ext.app.ppo import (  # noqa: E402
    METRIC_COLUMNS,
    HybridActorCritic,
    PPOHyperparameters,
    TrainResult,
    train,
)

EPISODES = 16  # two updates of 8 episodes


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> TrainResult:
    out = tmp_path_factory.mktemp("run")
    return train(EntropyRegularizationConfig.preset("long"), EPISODES, seed=3, out_dir=out, progress=False)


def read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_writes_csv_with_expected_columns_and_finite_values(run):
    assert run.csv_path.name == "metrics.csv" and run.plot_path.name == "training.png"
    header, rows = read_csv(run.csv_path)
    assert tuple(header) == METRIC_COLUMNS
    for column in ("update", "episodes", "mean_return", "discrete_entropy", "continuous_entropy",
                   "entropy_coeff", "discrete_penalty", "continuous_penalty", "entropy_loss_total"):
        assert column in header
    assert len(rows) == 2 and [int(r["update"]) for r in rows] == [1, 2]
    assert [int(r["episodes"]) for r in rows] == [8, 16]
    assert all(math.isfinite(float(r[c])) for r in rows for c in header)
    assert run.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_result(run):
    assert run.episodes == EPISODES == len(run.episode_returns)
    assert run.final_return == pytest.approx(sum(run.episode_returns) / EPISODES)
    assert all(math.isfinite(r) for r in run.episode_returns)


def test_regularizer_components_in_metrics(run):
    schedule = EntropyRegularizationConfig.preset("long").make_schedule()
    for row in run.metrics:
        # The coefficient follows the schedule of completed episodes.
        assert row["entropy_coeff"] == pytest.approx(schedule(int(row["episodes"])), rel=1e-6)
        parts = row["discrete_loss"] + row["continuous_loss"] + row["discrete_penalty"] + row["continuous_penalty"]
        assert row["entropy_loss_total"] == pytest.approx(parts, rel=1e-5, abs=1e-7)
        assert row["discrete_loss"] == pytest.approx(-row["entropy_coeff"] * row["discrete_entropy"], rel=1e-4)
        assert 0 < row["discrete_entropy"] <= math.log(5) + 1e-6
        assert row["discrete_penalty"] == 0.0  # far above the 0.1 threshold this early


def test_same_seed_same_run_other_seed_other_run(run, tmp_path):
    again = train(EntropyRegularizationConfig.preset("long"), EPISODES, seed=3, out_dir=tmp_path, progress=False)
    assert again.metrics == run.metrics and again.episode_returns == run.episode_returns
    assert (tmp_path / "metrics.csv").read_text() == run.csv_path.read_text()
    other = train(EntropyRegularizationConfig.preset("long"), EPISODES, seed=4, out_dir=None, progress=False)
    assert other.episode_returns != run.episode_returns
    assert other.csv_path is None and other.plot_path is None


def test_entropy_term_is_in_the_loss():
    # Same seed, same rollout of update 1; a different entropy term changes the update.
    def first_updates(config):
        return train(config, EPISODES, seed=0, progress=False).metrics

    none = first_updates(EntropyRegularizationConfig(enable_adaptive_entropy=False, entropy_coeff=0.0,
                                                     min_entropy_threshold=None))
    penalized = first_updates(EntropyRegularizationConfig(enable_adaptive_entropy=False, entropy_coeff=0.0,
                                                          min_entropy_threshold=5.0,
                                                          continuous_min_entropy_threshold=None))
    assert none[0]["mean_return"] == penalized[0]["mean_return"]  # same first rollout
    assert none[0]["entropy_loss_total"] == 0.0
    assert penalized[0]["discrete_penalty"] > 0 and penalized[0]["continuous_penalty"] == 0.0
    assert penalized[0]["entropy_loss_total"] == pytest.approx(penalized[0]["discrete_penalty"])
    # The penalty pushes the discrete entropy up: by update 2 the policies differ.
    assert penalized[1]["discrete_entropy"] > none[1]["discrete_entropy"]


def test_episodes_round_up_and_thread_count_restored():
    threads = torch.get_num_threads()
    result = train(None, 5, seed=1, hyperparameters=PPOHyperparameters(num_envs=4))
    assert result.episodes == 8 and len(result.metrics) == 2
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("episodes, seed", [(0, 0), (-3, 0), (2.5, 0), (8, -1)])
def test_bad_arguments(episodes, seed):
    with pytest.raises(ValueError):
        train(None, episodes, seed)


def test_adaptive_controller_drives_the_discrete_coefficient():
    # Target far above log 5: the discrete entropy is below it, so the coefficient climbs by
    # delta after each of the 32 minibatch steps of an update; the continuous head keeps 0.02.
    config = EntropyRegularizationConfig(
        enable_adaptive_entropy=False, entropy_coeff=0.02, min_entropy_threshold=None,
        target_entropy_control="adaptive", discrete_target_entropy=5.0, controller_initial_coeff=0.01,
        controller_delta=0.001)
    metrics = train(config, EPISODES, seed=0, progress=False).metrics
    # Mean over the update's steps of 0.01 + 0.001 * step: 0.01 + 0.001 * 15.5, then + 0.032.
    assert metrics[0]["discrete_entropy_coeff"] == pytest.approx(0.0255, rel=1e-5)
    assert metrics[1]["discrete_entropy_coeff"] == pytest.approx(0.0575, rel=1e-5)
    assert metrics[1]["continuous_entropy_coeff"] == pytest.approx(0.02, rel=1e-6)
    assert metrics[1]["entropy_coeff"] == pytest.approx(0.02, rel=1e-6)


def test_sac_controller_learns_with_the_agents_optimizer():
    config = EntropyRegularizationConfig(
        min_entropy_threshold=None, target_entropy_control="sac", discrete_target_entropy=5.0,
        controller_initial_coeff=0.01)
    metrics = train(config, EPISODES, seed=0, progress=False).metrics
    # Entropy below the target: the temperature loss raises the coefficient, step after step.
    assert 0.01 < metrics[0]["discrete_entropy_coeff"] < metrics[1]["discrete_entropy_coeff"]


def test_monitor_records_every_minibatch_step_at_the_completed_episodes():
    from hybrid_entropy_ext import EntropyMonitor

    monitor = EntropyMonitor(EntropyRegularizationConfig.preset("long"))
    result = train(EntropyRegularizationConfig.preset("long"), EPISODES, seed=3, progress=False, monitor=monitor)
    assert len(monitor.records) == 64
    assert [r["episode"] for r in monitor.records[::32]] == [8, 16]
    mean_first_update = sum(r["discrete_entropy"] for r in monitor.records[:32]) / 32
    assert mean_first_update == pytest.approx(result.metrics[0]["discrete_entropy"], rel=1e-6)


@pytest.mark.parametrize("unit, positions", [("episodes", [8, 16]), ("updates", [1, 2]), ("timesteps", None)])
def test_the_schedule_position_counts_the_configs_schedule_unit(unit, positions):
    from hybrid_entropy_ext import EntropyMonitor
    from hybrid_entropy_ext.app.envs import NetworkGrowthEnv

    config = EntropyRegularizationConfig.preset("long").replace(schedule_unit=unit)
    monitor = EntropyMonitor(config)
    train(config, EPISODES, seed=3, progress=False, monitor=monitor)
    if positions is None:  # 8 episodes of the environment's fixed length per update
        steps = NetworkGrowthEnv().max_steps
        positions = [8 * steps, 16 * steps]
    assert [r["episode"] for r in monitor.records[::32]] == positions
    schedule = config.make_schedule()
    assert monitor.records[32]["current_entropy_coeff"] == pytest.approx(schedule(positions[1]), rel=1e-6)


PARAMETERIZED = PPOHyperparameters(env_id="HybridNetworkGrowthParameterized-v0")


def test_a_parameterized_policy_trains_with_the_expected_action_entropy():
    # Each operation its own [2] parameters: log_std [5, 2]. With parameterized_actions, H_c is
    # the chosen operation's expected entropy (2 dims' worth); without, the 10 dims flattened.
    config = EntropyRegularizationConfig.preset("long")
    expected = train(config.replace(parameterized_actions=True), EPISODES, seed=0, hyperparameters=PARAMETERIZED)
    flattened = train(config, EPISODES, seed=0, hyperparameters=PARAMETERIZED)
    assert expected.metrics[0]["mean_return"] == flattened.metrics[0]["mean_return"]  # same first rollout
    gaussian = 0.5 * math.log(2 * math.pi * math.e)  # nats per dim at log_std 0, where training starts
    assert expected.metrics[0]["continuous_entropy"] == pytest.approx(2 * gaussian, abs=0.05)
    assert flattened.metrics[0]["continuous_entropy"] == pytest.approx(10 * gaussian, abs=0.2)
    for row in expected.metrics:
        assert all(math.isfinite(value) for value in row.values())


def test_parameterized_actions_need_a_parameterized_environment():
    config = EntropyRegularizationConfig(parameterized_actions=True)
    with pytest.raises(ValueError, match="parameterized_actions: .* each operation's own"):
        train(config, EPISODES, seed=0)


def test_a_parameterized_agent_scores_the_chosen_operations_parameters():
    # log p(op) + log N(params; mean[op], exp(log_std[op])), from torch.distributions.
    torch.manual_seed(0)
    agent = HybridActorCritic(obs_size=7, num_ops=5, num_params=2, parameterized=True)
    with torch.no_grad():
        agent.log_std.copy_(torch.randn(5, 2))
    obs, op, params = torch.rand(6, 7), torch.tensor([0, 4, 2, 2, 1, 3]), torch.randn(6, 2)
    log_prob, _, logits, mean = agent.evaluate(obs, op, params)
    assert mean.shape == (6, 5, 2)
    want = torch.distributions.Categorical(logits=logits).log_prob(op)
    for i in range(6):
        normal = torch.distributions.Normal(mean[i, op[i]], agent.log_std[op[i]].exp())
        want[i] = want[i] + normal.log_prob(params[i]).sum()
    torch.testing.assert_close(log_prob, want)
