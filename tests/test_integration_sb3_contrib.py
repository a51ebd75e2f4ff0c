"""``hybrid_entropy_ext.integrations.sb3_contrib``: sb3-contrib's ``MaskablePPO`` and
``RecurrentPPO`` with the regularizer as their entropy term, held to stock sb3-contrib 2.9.2.

With the ``plain`` preset each must follow the stock algorithm with ``ent_coef=0.01`` from
the same seed to float32 rounding: the masked categorical's entropy for MaskablePPO (the
masks reaching the op as its action mask), the mean over the steps that are not padding for
RecurrentPPO (the padding reaching the op as its sample mask).
"""

import numpy as np
import pytest
from common_utils import max_parameter_difference

sb3_contrib = pytest.importorskip("sb3_contrib", reason="needs sb3-contrib (pip install '.[sb3]')")

from sb3_contrib.common.envs import (  # noqa: E402
    InvalidActionEnvDiscrete,
    InvalidActionEnvMultiBinary,
    InvalidActionEnvMultiDiscrete,
)
from stable_baselines3.common.envs import IdentityEnv  # noqa: E402

from hybrid_entropy_ext.integrations.sb3_contrib import MaskablePPO, RecurrentPPO  # noqa: E402

SMALL = dict(n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
MASKED_ENVS = {
    "discrete": lambda: InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3),
    "multi-discrete": lambda: InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=2),
    # sb3-contrib's masked Bernoulli: a two-way categorical per bit, not one over 2n actions.
    "multi-binary": lambda: InvalidActionEnvMultiBinary(dims=4, n_invalid_actions=1),
}


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here trains with one torch thread (conftest.py)."""


def recording_masks(model):
    """The sample and action masks each regularizer call of ``model`` receives."""
    calls = []
    forward = model.entropy_regularizer.forward

    def record(*args, **kwargs):
        calls.append((kwargs.get("sample_mask"), kwargs.get("action_mask")))
        return forward(*args, **kwargs)

    model.entropy_regularizer.forward = record
    return calls


@pytest.mark.parametrize("space", MASKED_ENVS)
def test_maskable_ppo_with_the_plain_preset_trains_like_stock_maskable_ppo(space):
    stock = sb3_contrib.MaskablePPO("MlpPolicy", MASKED_ENVS[space](), ent_coef=0.01, **SMALL).learn(256)
    ours = MaskablePPO("MlpPolicy", MASKED_ENVS[space](), entropy_regularization="plain", **SMALL).learn(256)
    assert max_parameter_difference(stock, ours) < 1e-6
    stock_term = 0.01 * stock.logger.name_to_value["train/entropy_loss"]
    assert ours.logger.name_to_value["train/entropy_loss"] == pytest.approx(stock_term, rel=1e-5)


def test_maskable_ppo_passes_the_action_masks_to_the_op():
    model = MaskablePPO("MlpPolicy", MASKED_ENVS["discrete"](), entropy_regularization="plain", **SMALL)
    calls = recording_masks(model)
    model.learn(64)
    assert calls and all(action_mask is not None for _, action_mask in calls)
    assert all(int((~action_mask).sum(dim=-1).max()) == 3 for _, action_mask in calls)  # 3 invalid actions a state


def test_recurrent_ppo_with_the_plain_preset_trains_like_stock_recurrent_ppo():
    stock = sb3_contrib.RecurrentPPO("MlpLstmPolicy", IdentityEnv(4, ep_length=7), ent_coef=0.01, **SMALL).learn(256)
    ours = RecurrentPPO("MlpLstmPolicy", IdentityEnv(4, ep_length=7), entropy_regularization="plain", **SMALL)
    calls = recording_masks(ours)
    ours.learn(256)
    assert max_parameter_difference(stock, ours) < 1e-6
    # Episodes of 7 steps split the sequences of a minibatch: padding was there, and masked.
    assert any(not bool(sample_mask.all()) for sample_mask, _ in calls)


def test_maskable_ppo_saves_and_loads_its_regularizer(tmp_path):
    model = MaskablePPO("MlpPolicy", MASKED_ENVS["discrete"](), entropy_regularization="long", **SMALL).learn(128)
    model.save(tmp_path / "model.zip")
    loaded = MaskablePPO.load(tmp_path / "model.zip", env=MASKED_ENVS["discrete"](), device="cpu")
    assert loaded.entropy_regularization == model.entropy_regularization
    assert int(loaded.entropy_regularizer.episode_counter) == int(model.entropy_regularizer.episode_counter)


def test_maskable_ppo_predicts_with_action_masks():
    env = MASKED_ENVS["discrete"]()
    model = MaskablePPO("MlpPolicy", env, entropy_regularization="plain", **SMALL)
    obs, _ = env.reset(seed=0)
    only = np.zeros(8, dtype=bool)
    only[5] = True
    action, _ = model.predict(obs, action_masks=only)
    assert int(action) == 5
