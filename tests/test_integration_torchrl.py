"""``hybrid_entropy_ext.integrations.torchrl``: TorchRL's PPO losses with the regularizer as
their entropy term, held to TorchRL 0.14.1's own losses.

With the ``plain`` preset ``loss_entropy`` is TorchRL's ``-entropy_coeff * entropy`` with
``entropy_coeff = 0.01`` (the heads' entropies summed for a composite distribution), so it
must equal the stock loss's, gradients included; the other losses are TorchRL's, unchanged.
"""

import pytest
import torch

pytest.importorskip("torchrl", reason="needs torchrl (pip install '.[torchrl]')")

import torchrl.objectives as stock  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import CompositeDistribution, TensorDictModule  # noqa: E402
from torch.distributions import Categorical, Normal  # noqa: E402
from torchrl.modules import MaskedCategorical, ProbabilisticActor, ValueOperator  # noqa: E402

from hybrid_entropy_ext.integrations import torchrl as hee_torchrl  # noqa: E402

B, OBS, K, D = 32, 5, 4, 2


class HybridHeads(torch.nn.Module):
    """Observation -> the categorical's logits, the Gaussian's mean and (state-independent) scale."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(OBS, K + D)
        self.log_std = torch.nn.Parameter(torch.linspace(-0.5, 0.5, D))

    def forward(self, observation):
        z = self.net(observation)
        return z[..., :K], z[..., K:], self.log_std.exp().expand(*observation.shape[:-1], D)


def categorical_actor():
    module = TensorDictModule(torch.nn.Linear(OBS, K), ["observation"], ["logits"])
    return ProbabilisticActor(module, in_keys=["logits"], distribution_class=Categorical, return_log_prob=True)


def masked_actor():
    module = TensorDictModule(torch.nn.Linear(OBS, K), ["observation"], ["logits"])
    return ProbabilisticActor(module, in_keys=["logits", "mask"], distribution_class=MaskedCategorical,
                              return_log_prob=True)


def hybrid_actor():
    module = TensorDictModule(HybridHeads(), ["observation"], [("params", "discrete", "logits"),
                                                                ("params", "continuous", "loc"),
                                                                ("params", "continuous", "scale")])
    return ProbabilisticActor(
        module, in_keys=["params"], distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": {"discrete": Categorical, "continuous": Normal},
                             "name_map": {"discrete": ("action", "discrete"), "continuous": ("action", "continuous")}},
        return_log_prob=True)


class MultiDiscreteHeads(torch.nn.Module):
    """Observation -> two categoricals' logits (3 and 5 actions) and a Gaussian's mean and scale."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(OBS, 3 + 5 + D)

    def forward(self, observation):
        z = self.net(observation)
        return z[..., :3], z[..., 3:8], z[..., 8:], torch.ones_like(z[..., 8:])


def multi_discrete_actor():
    module = TensorDictModule(MultiDiscreteHeads(), ["observation"], [
        ("params", "first", "logits"), ("params", "second", "logits"),
        ("params", "arg", "loc"), ("params", "arg", "scale")])
    return ProbabilisticActor(
        module, in_keys=["params"], distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": {"first": Categorical, "second": Categorical, "arg": Normal},
                             "name_map": {"first": ("action", "first"), "second": ("action", "second"),
                                          "arg": ("action", "arg")}},
        return_log_prob=True)


ACTORS = {"categorical": categorical_actor, "masked": masked_actor, "hybrid": hybrid_actor,
          "multi-discrete": multi_discrete_actor}


def batch_of(actor, seed=0, batch_shape=(B,)):
    generator = torch.Generator().manual_seed(seed)
    td = TensorDict({"observation": torch.randn(*batch_shape, OBS, generator=generator)}, batch_shape)
    if "mask" in actor.in_keys:
        mask = torch.rand(*batch_shape, K, generator=generator) < 0.6
        mask[..., 0] = True
        td["mask"] = mask
    with torch.no_grad():
        td = actor(td)
    td["advantage"] = torch.randn(*batch_shape, 1, generator=generator)
    td["value_target"] = torch.randn(*batch_shape, 1, generator=generator)
    return td


def critic():
    return ValueOperator(torch.nn.Linear(OBS, 1), in_keys=["observation"])


def loss_and_grads(loss_module, td):
    torch.manual_seed(1)  # the same draws for a Monte-Carlo KL (KLPENPPOLoss)
    out = loss_module(td.clone())
    total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
    parameters = [p for p in loss_module.actor_network_params.values(True, True)]
    return out, torch.autograd.grad(total, parameters, allow_unused=True)


@pytest.mark.parametrize("loss_name", ["ClipPPOLoss", "PPOLoss", "KLPENPPOLoss"])
@pytest.mark.parametrize("actor_name", list(ACTORS))
def test_plain_preset_loss_entropy_equals_torchrls_with_entropy_coeff_0_01(loss_name, actor_name):
    torch.manual_seed(0)
    actor, value = ACTORS[actor_name](), critic()
    td = batch_of(actor)
    theirs, their_grads = loss_and_grads(getattr(stock, loss_name)(actor, value, entropy_coeff=0.01), td)
    ours, our_grads = loss_and_grads(getattr(hee_torchrl, loss_name)(actor, value, entropy_regularization="plain"), td)
    torch.testing.assert_close(ours["loss_entropy"], theirs["loss_entropy"])
    torch.testing.assert_close(ours["entropy"], theirs["entropy"])
    torch.testing.assert_close(ours["loss_objective"], theirs["loss_objective"])
    for mine, their in zip(our_grads, their_grads):
        if their is not None:
            torch.testing.assert_close(mine, their)


def test_every_output_of_the_regularizer_is_in_the_output_tensordict():
    actor = hybrid_actor()
    out = hee_torchrl.ClipPPOLoss(actor, critic(), entropy_regularization="long")(batch_of(actor))
    for key in ("total", "discrete", "continuous", "discrete_penalty", "continuous_penalty",
                "discrete_entropy", "continuous_entropy", "current_entropy_coeff"):
        assert not out["entropy_regularization", key].requires_grad
    torch.testing.assert_close(out["loss_entropy"], out["entropy_regularization", "total"])
    joint = out["entropy_regularization", "discrete_entropy"] + out["entropy_regularization", "continuous_entropy"]
    torch.testing.assert_close(out["entropy"], joint)


def test_a_masked_categoricals_mask_reaches_the_op_as_its_action_mask():
    actor = masked_actor()
    td = batch_of(actor)
    out = hee_torchrl.ClipPPOLoss(actor, critic(), entropy_regularization="plain")(td)
    with torch.no_grad():
        raw = actor.module[0].module(td["observation"])
    expected = Categorical(logits=raw.masked_fill(~td["mask"], float("-inf"))).entropy().mean()
    torch.testing.assert_close(out["entropy_regularization", "discrete_entropy"], expected)


def test_the_inputs_loss_mask_is_the_sample_mask():
    actor = categorical_actor()
    td = batch_of(actor, batch_shape=(4, 8))
    valid = torch.arange(8) < torch.tensor([[8], [5], [2], [7]])  # [4, 8]
    td["mask"] = valid.unsqueeze(-1)  # TorchRL's trailing singleton
    loss = hee_torchrl.ClipPPOLoss(actor, critic(), entropy_regularization="plain")
    loss.loss_mask_key = "mask"
    out = loss(td)
    with torch.no_grad():
        raw = actor.module[0].module(td["observation"])
    expected = Categorical(logits=raw[valid]).entropy().mean()
    torch.testing.assert_close(out["entropy_regularization", "discrete_entropy"], expected)


def entropy_terms_and_grads(loss_module, td):
    """``loss_entropy`` and its gradient in the actor's parameters."""
    out = loss_module(td.clone())
    parameters = [p for p in loss_module.actor_network_params.values(True, True)]
    return out["loss_entropy"], torch.autograd.grad(out["loss_entropy"], parameters, allow_unused=True)


def assert_entropy_terms_as_stock(td, actor):
    stock_loss, stock_grads = entropy_terms_and_grads(stock.ClipPPOLoss(actor, critic(), entropy_coeff=0.01), td)
    ours_loss, ours_grads = entropy_terms_and_grads(
        hee_torchrl.ClipPPOLoss(actor, critic(), entropy_regularization="plain"), td
    )
    torch.testing.assert_close(ours_loss, stock_loss)
    for ours, theirs in zip(ours_grads, stock_grads):
        if theirs is not None:
            torch.testing.assert_close(ours, theirs)


def test_every_loss_mask_of_the_input_is_applied_as_torchrl_combines_them():
    actor = categorical_actor()
    td = batch_of(actor, batch_shape=(4, 6))
    collector_mask = torch.ones(4, 6, 1, dtype=torch.bool)
    collector_mask[0, 3:] = False
    shifted_valid = torch.ones(4, 6, 1, dtype=torch.bool)
    shifted_valid[1:, -2:] = False
    td["collector", "mask"], td["shifted_valid"] = collector_mask, shifted_valid  # TorchRL's "auto" keys
    assert_entropy_terms_as_stock(td, actor)


# B == A once: a mask aligned with the trailing dim instead would pass unnoticed.
@pytest.mark.parametrize("agents", [3, 4])
def test_a_loss_mask_of_the_batch_dims_covers_every_agent_of_its_sample(agents):
    actor = categorical_actor()
    generator = torch.Generator().manual_seed(3)
    td = TensorDict({"observation": torch.randn(3, agents, OBS, generator=generator)}, [3])
    with torch.no_grad():
        td = actor(td)
    td["advantage"] = torch.randn(3, agents, 1, generator=generator)
    td["value_target"] = torch.randn(3, agents, 1, generator=generator)
    td["shifted_valid"] = torch.tensor([[True], [False], [True]])  # [B, 1]: per sample
    assert_entropy_terms_as_stock(td, actor)


def test_a_loss_mask_that_keeps_nothing_gives_torchrls_zero_loss_and_finite_gradients():
    actor = categorical_actor()
    td = batch_of(actor)
    td["shifted_valid"] = torch.zeros(B, 1, dtype=torch.bool)
    loss, grads = entropy_terms_and_grads(hee_torchrl.ClipPPOLoss(actor, critic(), entropy_regularization="long"), td)
    assert loss.item() == 0.0
    assert all(bool(g.isfinite().all()) for g in grads if g is not None)
    assert_entropy_terms_as_stock(td, actor)


def test_update_controllers_steps_an_adaptive_controller():
    config = {"enable_adaptive_entropy": False, "entropy_coeff": 0.01, "min_entropy_threshold": None,
              "target_entropy_control": "adaptive", "discrete_target_entropy": 5.0,
              "controller_initial_coeff": 0.01, "controller_delta": 0.001}
    actor = categorical_actor()
    loss = hee_torchrl.ClipPPOLoss(actor, critic(), entropy_regularization=config)
    loss(batch_of(actor))
    loss.update_controllers()
    assert loss.entropy_regularizer.discrete_controller.coefficient().item() == pytest.approx(0.011)


@pytest.mark.parametrize(
    "kwargs, match",
    [({}, "entropy_regularization is required"),
     ({"entropy_regularization": "plain", "entropy_coeff": 0.01}, "entropy_coeff"),
     ({"entropy_regularization": "plain", "entropy_bonus": False}, "entropy_bonus"),
     ({"entropy_regularization": "plain", "reduction": "sum"}, "reduction")],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hee_torchrl.ClipPPOLoss(categorical_actor(), critic(), **kwargs)


def test_a_composite_of_several_categoricals_is_a_multi_discrete_head_with_a_penalty_each():
    actor = multi_discrete_actor()
    td = batch_of(actor)
    loss = hee_torchrl.ClipPPOLoss(actor, critic(), entropy_regularization="long")
    out = loss(td)
    assert loss.entropy_regularizer.discrete_sizes == [3, 5]
    with torch.no_grad():
        z = actor.module[0].module.net(td["observation"])
    per_head = torch.stack([Categorical(logits=z[..., :3]).entropy().mean(), Categorical(logits=z[..., 3:8]).entropy().mean()])
    torch.testing.assert_close(out["entropy_regularization", "discrete_entropy_per_head"], per_head)
    torch.testing.assert_close(out["entropy_regularization", "discrete_entropy"], per_head.sum())


def test_loss_entropy_under_a_loss_mask_equals_torchrls_masked_reduction():
    actor, value = categorical_actor(), critic()
    td = batch_of(actor, batch_shape=(4, 8))
    td["mask"] = (torch.arange(8) < torch.tensor([[8], [5], [2], [7]])).unsqueeze(-1)
    theirs = stock.ClipPPOLoss(actor, value, entropy_coeff=0.01)
    ours = hee_torchrl.ClipPPOLoss(actor, value, entropy_regularization="plain")
    theirs.loss_mask_key = ours.loss_mask_key = "mask"
    torch.testing.assert_close(ours(td.clone())["loss_entropy"], theirs(td.clone())["loss_entropy"])
