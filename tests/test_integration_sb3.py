"""``hybrid_entropy_ext.integrations.sb3.PPO``: Stable-Baselines3's PPO with the regularizer as
its entropy term, held to stock SB3 (stable-baselines3 2.9.2, the real package).

With the ``plain`` preset the entropy term is SB3's own ``ent_coef * -mean(entropy)`` with
``ent_coef = 0.01``, so a run must follow stock ``PPO(ent_coef=0.01)`` from the same seed
to float32 rounding; everything else is checked on what SB3 logs and saves.
"""

import numpy as np
import pytest
import torch
from common_utils import max_parameter_difference

sb3 = pytest.importorskip("stable_baselines3", reason="needs stable-baselines3 (pip install '.[sb3]')")

from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiDiscrete  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

from hybrid_entropy_ext import EntropyRegularizationConfig  # noqa: E402
from hybrid_entropy_ext.integrations.sb3 import PPO  # noqa: E402

SMALL = dict(n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
EPISODE_LENGTH = 20
ENVS = {
    "discrete": lambda: IdentityEnv(4, ep_length=EPISODE_LENGTH),
    "box": lambda: IdentityEnvBox(ep_length=EPISODE_LENGTH),
    "multi-discrete": lambda: IdentityEnvMultiDiscrete(3, ep_length=EPISODE_LENGTH),
}


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here trains with one torch thread (conftest.py)."""


def logged(model):
    return dict(model.logger.name_to_value)


@pytest.mark.parametrize("space", ENVS)
def test_plain_preset_trains_like_stock_ppo_with_ent_coef_0_01(space):
    stock = sb3.PPO("MlpPolicy", ENVS[space](), ent_coef=0.01, **SMALL).learn(256)
    ours = PPO("MlpPolicy", ENVS[space](), entropy_regularization="plain", **SMALL).learn(256)
    assert max_parameter_difference(stock, ours) < 1e-6
    # SB3 logs -mean(entropy), before ent_coef; the integration logs the term itself, total.
    assert logged(ours)["train/entropy_loss"] == pytest.approx(0.01 * logged(stock)["train/entropy_loss"], rel=1e-5)


def test_without_entropy_regularization_it_is_stock_ppo():
    stock = sb3.PPO("MlpPolicy", ENVS["discrete"](), ent_coef=0.01, **SMALL).learn(128)
    ours = PPO("MlpPolicy", ENVS["discrete"](), ent_coef=0.01, **SMALL).learn(128)
    assert ours.entropy_regularizer is None
    assert max_parameter_difference(stock, ours) == 0.0
    assert not any(name.startswith("entropy/") for name in logged(ours))


def test_every_output_of_the_regularizer_is_logged_under_entropy():
    model = PPO("MlpPolicy", ENVS["multi-discrete"](), entropy_regularization="long", **SMALL).learn(64)
    values = logged(model)
    for key in ("total", "discrete", "continuous", "discrete_penalty", "continuous_penalty",
                "discrete_entropy", "continuous_entropy", "coefficient", "schedule_position",
                "discrete_entropy_per_head/0", "discrete_entropy_per_head/1"):
        assert "entropy/" + key in values, key
    assert values["train/entropy_loss"] == pytest.approx(values["entropy/total"], rel=1e-6)
    heads = values["entropy/discrete_entropy_per_head/0"] + values["entropy/discrete_entropy_per_head/1"]
    assert values["entropy/discrete_entropy"] == pytest.approx(heads, rel=1e-6)


def test_multi_discrete_sizes_come_from_the_action_space():
    model = PPO("MlpPolicy", ENVS["multi-discrete"](), entropy_regularization="long", **SMALL)
    assert model.entropy_regularizer.discrete_sizes == [int(n) for n in model.action_space.nvec]


def test_discrete_sizes_that_are_not_the_action_spaces_are_a_value_error():
    with pytest.raises(ValueError, match="nvec"):
        PPO("MlpPolicy", ENVS["multi-discrete"](), entropy_regularization={"discrete_sizes": [2, 4]}, **SMALL)


def test_a_collapsing_sub_head_is_penalized_on_its_own():
    config = {"enable_adaptive_entropy": False, "entropy_coeff": 0.01, "min_entropy_threshold": 0.1,
              "discrete_sizes": [3, 3], "discrete_head_thresholds": [0.0, 5.0]}  # the second is below its own
    model = PPO("MlpPolicy", ENVS["multi-discrete"](), entropy_regularization=config, **SMALL).learn(64)
    values = logged(model)
    below = 5.0 - values["entropy/discrete_entropy_per_head/1"]
    assert values["entropy/discrete_penalty"] == pytest.approx(3.0 * below, rel=1e-5)


@pytest.mark.parametrize(
    "unit, expected",
    [
        ("episodes", 2 * 2 * 64 // EPISODE_LENGTH),  # two envs, two rollouts of 64 steps, episodes of 20
        ("updates", 2),
        ("timesteps", 2 * 2 * 64),
    ],
)
def test_the_schedule_position_counts_the_configs_schedule_unit(unit, expected):
    env = make_vec_env(ENVS["discrete"], n_envs=2, seed=0)
    config = EntropyRegularizationConfig.preset("long").replace(schedule_unit=unit)
    model = PPO("MlpPolicy", env, entropy_regularization=config, **SMALL).learn(256)
    assert int(model.entropy_regularizer.episode_counter) == expected
    schedule = config.make_schedule()
    assert logged(model)["entropy/coefficient"] == pytest.approx(schedule(expected), rel=1e-6)


def test_adaptive_controller_steps_once_per_minibatch():
    config = {"enable_adaptive_entropy": False, "entropy_coeff": 0.01, "min_entropy_threshold": None,
              "target_entropy_control": "adaptive", "discrete_target_entropy": 5.0,  # above log 4: always below
              "controller_initial_coeff": 0.01, "controller_delta": 0.001}
    model = PPO("MlpPolicy", ENVS["discrete"](), entropy_regularization=config, **SMALL).learn(128)
    # Two updates of 2 epochs x 2 minibatches: 8 steps of +0.001.
    assert model.entropy_regularizer.discrete_controller.coefficient().item() == pytest.approx(0.018, rel=1e-5)


def test_a_sac_controllers_coefficient_learns_with_the_policys_optimizer():
    config = {"min_entropy_threshold": None, "target_entropy_control": "sac", "discrete_target_entropy": 5.0,
              "controller_initial_coeff": 0.01}
    model = PPO("MlpPolicy", ENVS["discrete"](), entropy_regularization=config, **SMALL).learn(128)
    assert model.entropy_regularizer.discrete_controller.coefficient().item() > 0.01


def test_save_and_load_keep_the_config_the_schedule_position_and_the_controller(tmp_path):
    config = {"entropy_coeff_start": 0.1, "entropy_coeff_end": 0.001, "entropy_decay_episodes": 50,
              "target_entropy_control": "adaptive", "discrete_target_entropy": 5.0, "controller_delta": 0.001}
    model = PPO("MlpPolicy", ENVS["discrete"](), entropy_regularization=config, **SMALL).learn(128)
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip", env=ENVS["discrete"](), device="cpu")
    assert loaded.entropy_regularization == model.entropy_regularization
    assert int(loaded.entropy_regularizer.episode_counter) == int(model.entropy_regularizer.episode_counter)
    assert loaded.entropy_regularizer.discrete_controller.coefficient().item() == pytest.approx(
        model.entropy_regularizer.discrete_controller.coefficient().item()
    )
    for name, value in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[name], value), name
    loaded.learn(64, reset_num_timesteps=False)  # and training goes on


def test_ent_coef_and_entropy_regularization_together_are_a_value_error():
    with pytest.raises(ValueError, match="ent_coef"):
        PPO("MlpPolicy", ENVS["discrete"](), ent_coef=0.01, entropy_regularization="plain", **SMALL)


@pytest.mark.parametrize("value, error", [(0.01, TypeError), ("no-such-preset", ValueError),
                                          ({"entropy_coeff": -1.0}, ValueError)])
def test_a_bad_entropy_regularization_is_rejected(value, error):
    with pytest.raises(error):
        PPO("MlpPolicy", ENVS["discrete"](), entropy_regularization=value, **SMALL)


def test_controllers_step_once_per_optimizer_step_even_when_target_kl_stops_an_update_early():
    config = {"enable_adaptive_entropy": False, "entropy_coeff": 0.01, "min_entropy_threshold": None,
              "target_entropy_control": "adaptive", "discrete_target_entropy": 5.0,
              "controller_initial_coeff": 0.01, "controller_delta": 0.001}
    model = PPO("MlpPolicy", ENVS["discrete"](), entropy_regularization=config, target_kl=1e-12, **SMALL)
    steps = []
    model.policy.optimizer.register_step_post_hook(lambda *_: steps.append(1))
    model.learn(128)
    # Each update stops at its second minibatch, evaluated but not stepped.
    assert len(steps) == 2
    assert model.entropy_regularizer.discrete_controller.coefficient().item() == pytest.approx(0.012, rel=1e-5)


def test_train_puts_back_what_it_lends_the_policy_even_when_it_raises():
    model = PPO("MlpPolicy", ENVS["discrete"](), entropy_regularization="plain", **SMALL)
    own = model.policy.evaluate_actions

    build = model.policy._get_action_dist_from_latent

    during_update = []

    def failing(*args, **kwargs):  # fails in the update (with grad), not in the rollout
        if torch.is_grad_enabled():
            during_update.append(("evaluate_actions" in vars(model.policy), model.ent_coef))
            raise RuntimeError("boom")
        return build(*args, **kwargs)

    model.policy._get_action_dist_from_latent = failing  # an instance attribute of the user's
    with pytest.raises(RuntimeError, match="boom"):
        model.learn(64)
    assert during_update == [(True, 1.0)]  # it failed inside the update, with everything lent
    assert model.policy._get_action_dist_from_latent is failing
    assert "evaluate_actions" not in vars(model.policy) and model.policy.evaluate_actions == own
    assert "get" not in vars(model.rollout_buffer) and model.ent_coef == 0.0


def test_parameterized_actions_without_a_parameterized_space_is_a_value_error():
    with pytest.raises(ValueError, match="parameterized action space"):
        PPO("MlpPolicy", ENVS["discrete"](), entropy_regularization={"parameterized_actions": True}, **SMALL)


def test_a_squashed_gaussian_is_a_type_error():
    model = PPO("MlpPolicy", ENVS["box"](), entropy_regularization="plain", use_sde=True,
                policy_kwargs={"squash_output": True}, **SMALL)
    with pytest.raises(TypeError, match="squash"):
        model.learn(64)
