"""HybridNetworkGrowth-v0 and its parameterized variant: Gymnasium API conformance, seeding,
the deceptive reward, each operation reading its own parameters."""

import warnings

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from hybrid_entropy_ext.app.envs import (  # noqa: E402
    EDGE_OP,
    GREEDY_OP,
    NETWORK_GROWTH_ID,
    OPERATIONS,
    PARAMETERIZED_NETWORK_GROWTH_ID,
    NetworkGrowthEnv,
)

TARGET = np.array([0.6, -0.5], dtype=np.float32)
ZEROS = np.zeros(2, dtype=np.float32)


def rollout(env, policy, seed):
    """Return of one episode; ``policy(env, obs) -> action``."""
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(env.unwrapped, obs))
        total += reward
        done = terminated or truncated
    return total


def greedy(env, obs):
    return GREEDY_OP, ZEROS


def scripted_good(env, obs):
    # Wire edges at the target; add a node when no free pair is left.
    return (EDGE_OP if env.free_pairs > 0 else GREEDY_OP), TARGET


def test_registered_and_passes_check_env_without_warnings():
    assert NETWORK_GROWTH_ID == "HybridNetworkGrowth-v0"
    env = gym.make("HybridNetworkGrowth-v0")  # made through the registry, so it has a spec
    assert isinstance(env.unwrapped, NetworkGrowthEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_spaces():
    env = NetworkGrowthEnv()
    space = env.action_space
    assert isinstance(space, gym.spaces.Tuple) and len(space) == 2
    assert isinstance(space[0], gym.spaces.Discrete) and space[0].n == len(OPERATIONS) == 5
    assert isinstance(space[1], gym.spaces.Box) and space[1].shape == (2,)
    assert np.all(space[1].low == -1) and np.all(space[1].high == 1)
    assert isinstance(env.observation_space, gym.spaces.Box) and env.observation_space.shape == (7,)
    assert env.observation_space.dtype == np.float32
    assert NetworkGrowthEnv(target=(0.1, 0.2, 0.3)).action_space[1].shape == (3,)


def test_seeded_episodes_are_deterministic():
    def trajectory(seed):
        env = NetworkGrowthEnv()
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        steps = [obs]
        for _ in range(env.max_steps):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            steps += [obs, reward, terminated, truncated, info["structures_completed"]]
        assert terminated and not truncated
        return steps

    a, b = trajectory(7), trajectory(7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    initial = {float(NetworkGrowthEnv().reset(seed=s)[0][1]) for s in range(20)}
    assert len(initial) > 1, "the seed should change the initial node count"


def test_episode_length_and_time_in_observation():
    env = NetworkGrowthEnv(max_steps=5)
    obs, _ = env.reset(seed=0)
    assert obs[0] == 0
    for t in range(1, 6):
        obs, _, terminated, truncated, _ = env.step((0, ZEROS))
        assert obs[0] == pytest.approx(t / 5) and terminated == (t == 5) and not truncated
    with pytest.raises(RuntimeError, match="reset"):
        env.step((0, ZEROS))


def test_deceptive_greedy_reward_and_better_scripted_policy():
    env = gym.make("HybridNetworkGrowth-v0")
    # The greedy op pays at once, every step.
    env.reset(seed=0)
    assert env.step((GREEDY_OP, ZEROS))[1] == pytest.approx(0.1)
    greedy_returns = [rollout(env, greedy, seed) for seed in range(5)]
    assert greedy_returns == pytest.approx([3.2] * 5)
    good_returns = [rollout(env, scripted_good, seed) for seed in range(5)]
    assert min(good_returns) > 20 > 3 * max(greedy_returns)
    # Edges with parameters far from the target complete structures but pay little.
    far = np.array([-1.0, 1.0], dtype=np.float32)
    bad_returns = [rollout(env, lambda e, o: ((EDGE_OP if e.free_pairs > 0 else GREEDY_OP), far), s) for s in range(5)]
    assert max(bad_returns) < min(greedy_returns)


def test_structure_reward_is_delayed_and_depends_on_parameters():
    env = NetworkGrowthEnv()
    env.reset(seed=0)
    rewards = [env.step((EDGE_OP, TARGET))[1] for _ in range(3)]
    assert rewards[:2] == [0.0, 0.0]
    assert rewards[2] == pytest.approx(3.0)
    env.reset(seed=0)
    off = TARGET + np.array([0.3, 0.0], dtype=np.float32)
    rewards = [env.step((EDGE_OP, off))[1] for _ in range(3)]
    assert rewards[2] == pytest.approx(3.0 * np.exp(-0.5), rel=1e-5)


def test_prune_rewire_and_invalid_operations():
    env = NetworkGrowthEnv(initial_nodes=(2, 2))  # one free pair
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step((3, ZEROS))  # prune with nothing pending: no effect
    assert obs[6] == 0.0
    obs, *_ = env.step((EDGE_OP, ZEROS))
    assert obs[3] == pytest.approx(1 / 3) and obs[2] == 0.0
    obs, *_ = env.step((EDGE_OP, ZEROS))  # no free pair left
    assert obs[6] == 0.0 and obs[3] == pytest.approx(1 / 3)
    obs, *_ = env.step((4, TARGET))  # rewire the pending edge at the target
    assert obs[4] == pytest.approx(1.0) and obs[6] == 1.0
    obs, *_ = env.step((3, ZEROS))  # prune it
    assert obs[3] == 0.0 and obs[2] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="action\\[0\\]"):
        env.step((9, ZEROS))
    with pytest.raises(ValueError, match="action\\[1\\]"):
        env.step((0, np.zeros(3, dtype=np.float32)))


def test_sync_vector_env():
    n = 4
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("HybridNetworkGrowth-v0") for _ in range(n)])
    try:
        obs, _ = envs.reset(seed=[0, 1, 2, 3])
        assert obs.shape == (n, 7)
        ops = np.full(n, GREEDY_OP)
        params = np.zeros((n, 2), dtype=np.float32)
        obs, reward, terminated, truncated, _ = envs.step((ops, params))
        assert obs.shape == (n, 7) and reward.shape == (n,)
        assert np.allclose(reward, 0.1) and not terminated.any() and not truncated.any()
        envs.action_space.seed(0)
        sample = envs.action_space.sample()
        assert sample[0].shape == (n,) and sample[1].shape == (n, 2)
    finally:
        envs.close()


@pytest.mark.parametrize("kwargs", [{"max_steps": 0}, {"quality_width": 0.0}, {"target": (2.0, 0.0)},
                                    {"initial_nodes": (1, 3)}, {"render_mode": "human"}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        NetworkGrowthEnv(**kwargs)


# --- the parameterized variant: each operation its own parameters --------------------------


def one_per_operation(chosen_op, chosen_params, others=ZEROS):
    return tuple(chosen_params if op == chosen_op else others for op in range(len(OPERATIONS)))


def test_parameterized_variant_is_registered_and_passes_check_env():
    env = gym.make(PARAMETERIZED_NETWORK_GROWTH_ID)
    assert env.unwrapped.parameterized
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_parameterized_action_space_has_one_box_per_operation():
    space = NetworkGrowthEnv(parameterized=True).action_space
    assert isinstance(space[1], gym.spaces.Tuple) and len(space[1]) == len(OPERATIONS)
    assert all(isinstance(box, gym.spaces.Box) and box.shape == (2,) for box in space[1])


def test_each_operation_reads_its_own_parameters():
    # add_edge at the target with every other operation's parameters far off: full quality;
    # the target given to another operation and add_edge's far off: low quality.
    env = NetworkGrowthEnv(parameterized=True)
    far = -TARGET
    env.reset(seed=0)
    rewards = [env.step((EDGE_OP, one_per_operation(EDGE_OP, TARGET, others=far)))[1] for _ in range(3)]
    assert rewards[2] == pytest.approx(3.0)
    env.reset(seed=0)
    rewards = [env.step((EDGE_OP, one_per_operation(4, TARGET, others=far)))[1] for _ in range(3)]
    assert rewards[2] == pytest.approx(3.0 * env.quality(far))
    with pytest.raises(ValueError, match="one parameter vector per operation"):
        env.step((EDGE_OP, (TARGET, TARGET)))


def test_parameterized_sync_vector_env_takes_one_array_per_operation():
    # add_edge's own array at the target, every other operation's far off: each env's third
    # edge completes a structure of full quality.
    n = 3
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(PARAMETERIZED_NETWORK_GROWTH_ID) for _ in range(n)])
    try:
        envs.reset(seed=[0, 1, 2])
        params = tuple(np.tile(TARGET if op == EDGE_OP else -TARGET, (n, 1)) for op in range(len(OPERATIONS)))
        rewards = [envs.step((np.full(n, EDGE_OP), params))[1] for _ in range(3)]
        assert np.allclose(rewards[2], 3.0)
    finally:
        envs.close()
