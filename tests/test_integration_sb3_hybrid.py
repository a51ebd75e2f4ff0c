"""``hybrid_entropy_ext.integrations.sb3.PPO`` on the action spaces Stable-Baselines3 lacks:
hybrid ``Tuple((Discrete(n), Box(d)))`` and parameterized
``Tuple((Discrete(n), Tuple((Box(p_1), ..., Box(p_n)))))`` (Platform's layout).

The policy's distribution is held to its definition written with ``torch.distributions``
(the product of the heads: ``log p(k) + log N(x)``, for a parameterized space the chosen
action's parameters only; the entropy ``H(k) + H(x)``, parameterized
``H(k) + sum_k p_k H(x_k)``), and the model to what a user does with it: train, predict
actions the environment accepts, save and load.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical, Normal

pytest.importorskip("stable_baselines3", reason="needs stable-baselines3 (pip install '.[sb3]')")

from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

from hybrid_entropy_ext.integrations.sb3 import PPO  # noqa: E402
from hybrid_entropy_ext.integrations.sb3_contrib import MaskablePPO  # noqa: E402
from hybrid_entropy_ext.integrations.sb3_policies import HybridActorCriticPolicy  # noqa: E402

SMALL = dict(n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
NUM_ACTIONS, NUM_PARAMS = 3, 2


class TargetEnv(gym.Env):
    """Observe a target action (one-hot); reward 1 for choosing it, less the distance of its
    parameters from 0.5. Episodes of 8 steps. ``parameterized``: each action its own
    parameters (only the chosen one's count)."""

    def __init__(self, parameterized: bool = False):
        self.parameterized = parameterized
        self.observation_space = spaces.Box(0.0, 1.0, (NUM_ACTIONS,), np.float32)
        box = spaces.Box(-1.0, 1.0, (NUM_PARAMS,), np.float32)
        params = spaces.Tuple([box] * NUM_ACTIONS) if parameterized else box
        self.action_space = spaces.Tuple((spaces.Discrete(NUM_ACTIONS), params))
        self.steps_taken = []

    def _observe(self):
        return np.eye(NUM_ACTIONS, dtype=np.float32)[self.target]

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.target, self.t = int(self.np_random.integers(NUM_ACTIONS)), 0
        return self._observe(), {}

    def step(self, action):
        assert self.action_space.contains((int(action[0]), action[1])), action
        index, params = action
        chosen = params[index] if self.parameterized else params
        self.steps_taken.append(action)
        reward = float(index == self.target) - float(np.abs(np.asarray(chosen) - 0.5).mean())
        self.t += 1
        self.target = int(self.np_random.integers(NUM_ACTIONS))
        return self._observe(), reward, False, self.t >= 8, {}


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here trains with one torch thread (conftest.py)."""


def distribution_of(model, observations):
    obs = torch.as_tensor(observations)
    return model.policy.get_distribution(obs)


@pytest.mark.parametrize("parameterized", [False, True], ids=["hybrid", "parameterized"])
def test_mlp_policy_on_a_tuple_space_is_the_hybrid_policy_and_trains(parameterized):
    env = TargetEnv(parameterized)
    model = PPO("MlpPolicy", env, entropy_regularization="long", **SMALL).learn(128)
    assert isinstance(model.policy, HybridActorCriticPolicy)
    assert model.action_layout.parameterized == parameterized
    assert env.steps_taken and all(isinstance(step, tuple) for step in env.steps_taken)


def test_hybrid_log_prob_and_entropy_are_the_product_of_the_heads():
    model = PPO("MlpPolicy", TargetEnv(), entropy_regularization="plain", **SMALL)
    observations = np.eye(NUM_ACTIONS, dtype=np.float32)
    dist = distribution_of(model, observations)
    actions = torch.tensor([[0.0, 0.1, -0.2], [2.0, 0.5, 0.3], [1.0, -0.9, 0.9]])
    logits, means = dist.categorical.logits, dist.gaussian.mean
    std = model.policy.log_std.exp()
    expected = Categorical(logits=logits).log_prob(actions[:, 0].long()) + Normal(means, std).log_prob(actions[:, 1:]).sum(-1)
    torch.testing.assert_close(dist.log_prob(actions), expected)
    expected_entropy = Categorical(logits=logits).entropy() + Normal(means, std).entropy().sum(-1)
    torch.testing.assert_close(dist.entropy(), expected_entropy)


def test_parameterized_log_prob_counts_the_chosen_actions_parameters_only():
    model = PPO("MlpPolicy", TargetEnv(parameterized=True), entropy_regularization="plain", **SMALL)
    dist = distribution_of(model, np.eye(NUM_ACTIONS, dtype=np.float32))
    params = torch.randn(3, NUM_ACTIONS, NUM_PARAMS).clamp(-1, 1)
    index = torch.tensor([2, 0, 1])
    actions = torch.cat([index.float().unsqueeze(-1), params.reshape(3, -1)], dim=-1)
    logits, means = dist.categorical.logits, dist.gaussian.mean  # [3, n], [3, n, p]
    std = model.policy.log_std.exp()  # [n, p]
    chosen = Normal(means[torch.arange(3), index], std[index]).log_prob(params[torch.arange(3), index]).sum(-1)
    torch.testing.assert_close(dist.log_prob(actions), Categorical(logits=logits).log_prob(index) + chosen)


def test_parameterized_entropy_term_is_the_expected_entropy_of_the_chosen_parameters():
    model = PPO("MlpPolicy", TargetEnv(parameterized=True), entropy_regularization="plain", **SMALL)
    with torch.no_grad():
        model.policy.log_std.copy_(torch.tensor([[-1.0, 0.0], [0.5, 0.5], [0.0, -2.0]]))
    dist = distribution_of(model, np.eye(NUM_ACTIONS, dtype=np.float32))
    probs = Categorical(logits=dist.categorical.logits).probs
    action_entropy = Normal(torch.zeros(NUM_ACTIONS, NUM_PARAMS), model.policy.log_std.exp()).entropy().sum(-1)
    expected_h_c = (probs * action_entropy).sum(-1)
    torch.testing.assert_close(dist.entropy(), Categorical(logits=dist.categorical.logits).entropy() + expected_h_c)
    assert model.entropy_regularizer.parameterized_actions
    from hybrid_entropy_ext.integrations.sb3_policies import entropy_inputs

    heads = entropy_inputs(dist)
    out = model.entropy_regularizer(heads.logits, heads.log_std)
    torch.testing.assert_close(out["continuous_entropy"], expected_h_c.mean())


@pytest.mark.parametrize("parameterized", [False, True], ids=["hybrid", "parameterized"])
def test_predict_returns_actions_the_environment_accepts(parameterized):
    env = TargetEnv(parameterized)
    model = PPO("MlpPolicy", env, entropy_regularization="plain", **SMALL)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains((int(action[0]), action[1]))
    env.step(action)
    actions, _ = model.predict(np.stack([obs, obs]))
    assert len(actions) == 2 and all(isinstance(a, tuple) for a in actions)


def test_a_vectorized_hybrid_environment_trains():
    env = make_vec_env(lambda: TargetEnv(), n_envs=2, seed=0)
    model = PPO("MlpPolicy", env, entropy_regularization="long", **SMALL).learn(256)
    assert int(model.entropy_regularizer.episode_counter) == 2 * 2 * 64 // 8  # two envs, two rollouts


def test_a_hybrid_model_saves_and_loads(tmp_path):
    model = PPO("MlpPolicy", TargetEnv(parameterized=True), entropy_regularization="long", **SMALL).learn(64)
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip", env=TargetEnv(parameterized=True), device="cpu")
    obs = np.eye(NUM_ACTIONS, dtype=np.float32)[1]
    first, second = model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    assert first[0] == second[0] and all(np.allclose(a, b) for a, b in zip(first[1], second[1]))
    loaded.learn(64, reset_num_timesteps=False)


class UnequalParamsEnv(TargetEnv):
    """Parameterized, its three actions with 1, 3 and 2 parameters (as Goal's do)."""

    SIZES = (1, 3, 2)

    def __init__(self):
        super().__init__(parameterized=True)
        boxes = [spaces.Box(-1.0, 1.0, (size,), np.float32) for size in self.SIZES]
        self.action_space = spaces.Tuple((spaces.Discrete(NUM_ACTIONS), spaces.Tuple(boxes)))


def test_actions_with_different_numbers_of_parameters_count_their_own_only():
    model = PPO("MlpPolicy", UnequalParamsEnv(), entropy_regularization="plain", **SMALL)
    assert model.action_space.shape == (1 + sum(UnequalParamsEnv.SIZES),)
    with torch.no_grad():
        model.policy.log_std.copy_(torch.tensor([[-1.0, 7.0, 7.0], [0.5, 0.2, -0.3], [0.0, -2.0, 7.0]]))  # 7: padding
    dist = distribution_of(model, np.eye(NUM_ACTIONS, dtype=np.float32))
    flat = torch.tensor([[1.0, 0.3, -0.1, 0.2, 0.4, 0.5, -0.5]] * 3)  # action 1: its 3 parameters are columns 2-4
    means, log_std = dist.gaussian.mean, model.policy.log_std.detach()
    chosen = Normal(means[:, 1, :3], log_std[1, :3].exp()).log_prob(flat[:, 2:5]).sum(-1)
    torch.testing.assert_close(dist.log_prob(flat), Categorical(logits=dist.categorical.logits).log_prob(flat[:, 0].long()) + chosen)
    action_entropy = torch.stack([Normal(0.0, log_std[k, :size].exp()).entropy().sum()
                                  for k, size in enumerate(UnequalParamsEnv.SIZES)])
    probs = Categorical(logits=dist.categorical.logits).probs
    from hybrid_entropy_ext.integrations.sb3_policies import entropy_inputs

    heads = entropy_inputs(dist)
    out = model.entropy_regularizer(heads.logits, heads.log_std)
    torch.testing.assert_close(out["continuous_entropy"], (probs * action_entropy).sum(-1).mean())
    torch.testing.assert_close(dist.entropy(), Categorical(logits=dist.categorical.logits).entropy() + (probs * action_entropy).sum(-1))


def test_a_space_with_different_numbers_of_parameters_trains_and_predicts():
    env = UnequalParamsEnv()
    model = PPO("MlpPolicy", env, entropy_regularization="long", **SMALL).learn(128)
    action, _ = model.predict(np.eye(NUM_ACTIONS, dtype=np.float32)[0])
    assert [len(p) for p in action[1]] == list(UnequalParamsEnv.SIZES)
    assert all(env.action_space.contains((int(a[0]), a[1])) for a in env.steps_taken)


def test_another_tuple_space_is_a_value_error():
    env = TargetEnv()
    env.action_space = spaces.Tuple((spaces.Box(-1, 1, (1,)), spaces.Discrete(2)))
    with pytest.raises(ValueError, match="supported Tuple action spaces"):
        PPO("MlpPolicy", env, entropy_regularization="plain", **SMALL)


@pytest.mark.parametrize("policy", ["MultiInputPolicy", "CnnPolicy"])
def test_a_policy_other_than_the_hybrid_one_is_a_value_error_naming_it(policy):
    with pytest.raises(ValueError, match=f"policy='MlpPolicy'.*got '{policy}'"):
        PPO(policy, TargetEnv(False), entropy_regularization="plain", **SMALL)


def test_maskable_ppo_rejects_a_hybrid_space():
    with pytest.raises(ValueError, match="hybrid"):
        MaskablePPO("MlpPolicy", TargetEnv(), entropy_regularization="plain", **SMALL)


def test_discrete_sizes_with_a_hybrid_space_is_a_value_error():
    with pytest.raises(ValueError, match="discrete_sizes"):
        PPO("MlpPolicy", TargetEnv(), entropy_regularization={"discrete_sizes": [1, 2]}, **SMALL)
