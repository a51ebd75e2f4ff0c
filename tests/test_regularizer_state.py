"""``hee.HybridEntropyRegularizer``: the episode counter, user schedules,
target-entropy controllers per head, checkpoints, TorchScript and torch.compile."""

import math
from typing import Dict

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import hybrid_entropy_ext as hee
from hybrid_entropy_ext.regularization.config import EntropyRegularizationConfig
from common_utils import assert_outputs_equal, needs_cuda, random_heads
from oracle import KEYS, distributions_oracle

# TorchScript support is part of the contract, so its deprecation notice is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

LONG = EntropyRegularizationConfig.preset("long")  # 0.1 -> 0.001 over 500 episodes
PER_HEAD_KEYS = ("discrete_entropy_coeff", "continuous_entropy_coeff")


# --- the episode counter ------------------------------------------------------------------


def test_counter_is_a_0_dim_int64_buffer_at_0_in_the_state_dict():
    reg = hee.HybridEntropyRegularizer(LONG)
    assert list(reg.state_dict()) == ["episode_counter"]
    counter = reg.state_dict()["episode_counter"]
    assert counter.dtype == torch.int64 and counter.dim() == 0 and counter.item() == 0


def test_step_advances_the_counter_by_one_by_default():
    reg = hee.HybridEntropyRegularizer(LONG)
    reg.step()
    reg.step()
    assert reg.episode_counter.item() == 2


def test_step_advances_the_counter_by_the_given_count():
    reg = hee.HybridEntropyRegularizer(LONG)
    reg.step(8)
    reg.step(np.int64(32))
    assert reg.episode_counter.item() == 40


@pytest.mark.parametrize(
    "episodes, error", [(-1, ValueError), (1.0, TypeError), (True, TypeError), (np.float32(2), TypeError)]
)
def test_step_rejects_a_bad_count_by_name(episodes, error):
    reg = hee.HybridEntropyRegularizer(LONG)
    with pytest.raises(error, match=r"episodes: expected an integer number of episodes >= 0"):
        reg.step(episodes)
    assert reg.episode_counter.item() == 0


def test_forward_without_episode_uses_the_counter():
    reg = hee.HybridEntropyRegularizer(LONG)
    reg.step(250)
    # long: 0.1 * (1 - 250/500) + 0.001 * 250/500 = 0.0505
    assert reg(*random_heads(dtype=torch.float64))["current_entropy_coeff"].item() == pytest.approx(0.0505, rel=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "exponential", "piecewise", "constant"])
def test_forward_at_the_counter_equals_forward_at_that_episode_bitwise(schedule):
    reg = hee.HybridEntropyRegularizer(_config(schedule))
    logits, log_std = random_heads(dtype=torch.float64)
    for episode in (0, 137, 700):
        reg.episode_counter.fill_(episode)
        assert_outputs_equal(reg(logits, log_std), reg(logits, log_std, episode))


def _expected_coefficient(schedule: str, e: int) -> float:
    """The schedule's formula by hand (docs/design.md): long is 0.1 -> 0.001 over N = 500 episodes."""
    start, end, n = 0.1, 0.001, 500
    if schedule == "constant":
        return 0.01
    if schedule == "piecewise":  # [[0, 0.1], [300, 0.0]]
        return 0.1 * (1.0 - e / 300) + 0.0 * (e / 300) if e < 300 else 0.0
    if e >= n:
        return end
    if schedule == "linear":
        return start * (1.0 - e / n) + end * (e / n)
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * e / n))
    return start * (end / start) ** (e / n)  # exponential


def _config(schedule: str) -> EntropyRegularizationConfig:
    return {
        "linear": LONG,
        "cosine": LONG.replace(entropy_schedule="cosine"),
        "exponential": LONG.replace(entropy_schedule="exponential"),
        "piecewise": LONG.replace(entropy_schedule="piecewise", entropy_schedule_points=[[0, 0.1], [300, 0.0]]),
        "constant": LONG.replace(enable_adaptive_entropy=False),
    }[schedule]


def _force_the_tensor_path(reg: nn.Module) -> None:
    # What a counter on a GPU (or torch.compile) does: the coefficient from the counter with
    # tensor operations. The host form is made to raise, so that it cannot be used instead.
    reg._counter_read_on_host = lambda: False

    def host_form(episode):
        raise AssertionError("the host form of the schedule was called")

    reg.schedule.forward = host_form


@pytest.mark.parametrize("schedule", ["linear", "cosine", "exponential", "piecewise", "constant"])
def test_tensor_path_from_the_counter_gives_the_formulas(schedule):
    reg = hee.HybridEntropyRegularizer(_config(schedule))
    _force_the_tensor_path(reg)
    logits, log_std = random_heads(dtype=torch.float64)
    # Bitwise where the tensor form does the same IEEE operations as Python (linear, constant,
    # piecewise); cos and pow may differ from the C library's in the last bit.
    rel = 0.0 if schedule in ("linear", "constant", "piecewise") else 4e-16
    for episode in (0, 1, 137, 299, 300, 499, 500, 700):
        reg.episode_counter.fill_(episode)
        expected = _expected_coefficient(schedule, episode)
        got = reg._scheduled_from_counter()
        assert got.dtype == torch.float64 and got.dim() == 0
        assert got.item() == pytest.approx(expected, rel=rel, abs=0.0), episode
        out = reg(logits, log_std)
        assert out["current_entropy_coeff"].item() == pytest.approx(expected, rel=rel, abs=0.0), episode
        # The loss used that coefficient: the entropy terms are -c * w * H.
        assert out["discrete"].item() == pytest.approx(-expected * out["discrete_entropy"].item(), rel=1e-15)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "exponential", "piecewise", "constant"])
def test_tensor_path_with_a_controller_gives_the_other_head_the_formula(schedule):
    reg = hee.HybridEntropyRegularizer(
        _config(schedule), discrete_controller=hee.TargetEntropyController(5.0, "sac", initial_coeff=0.25))
    _force_the_tensor_path(reg)
    reg.episode_counter.fill_(137)
    out = reg(*random_heads(dtype=torch.float64))
    expected = _expected_coefficient(schedule, 137)
    assert out["continuous_entropy_coeff"].item() == pytest.approx(expected, rel=4e-16, abs=0.0)
    assert out["discrete_entropy_coeff"].item() == pytest.approx(0.25, rel=1e-7)


def test_user_schedule_without_a_tensor_form_falls_back_to_reading_the_counter():
    # Off the CPU (or under torch.compile) a schedule without coefficient_tensor is called with
    # the counter read as an int: a device sync there, the only way to evaluate it.
    reg = hee.HybridEntropyRegularizer(LONG, schedule=HalvingSchedule())
    reg._counter_read_on_host = lambda: False
    reg.step(150)
    got = reg._scheduled_from_counter()
    assert got.dtype == torch.float64 and got.dim() == 0 and got.item() == 0.04
    assert reg(*random_heads(dtype=torch.float64))["current_entropy_coeff"].item() == 0.04


def test_user_schedule_without_a_tensor_form_under_torch_compile_follows_the_counter():
    # Under torch.compile the regularizer takes the tensor path; the fallback reads the counter
    # (a graph break, so no fullgraph here) and gives the schedule's value.
    torch._dynamo.reset()
    reg = hee.HybridEntropyRegularizer(LONG, schedule=HalvingSchedule())
    compiled = torch.compile(reg, backend="eager")
    logits, log_std = random_heads(dtype=torch.float64)
    for episodes, expected in ((0, 0.08), (150, 0.04), (100, 0.02)):
        reg.step(episodes)
        assert compiled(logits, log_std)["current_entropy_coeff"].item() == expected
    torch._dynamo.reset()


def test_explicit_episode_leaves_the_counter_alone():
    reg = hee.HybridEntropyRegularizer(LONG)
    reg.step(3)
    reg(*random_heads(dtype=torch.float64), 400)
    reg(*random_heads(dtype=torch.float64))
    assert reg.episode_counter.item() == 3


def test_numpy_integer_episode_gives_the_int_episode_result():
    reg = hee.HybridEntropyRegularizer(LONG)
    logits, log_std = random_heads(dtype=torch.float64)
    assert_outputs_equal(reg(logits, log_std, np.int64(250)), reg(logits, log_std, 250))


def test_episode_keyword_and_positional_give_the_same():
    reg = hee.HybridEntropyRegularizer(LONG)
    logits, log_std = random_heads(dtype=torch.float64)
    assert_outputs_equal(reg(logits, log_std, episode=42), reg(logits, log_std, 42))


# --- checkpoints --------------------------------------------------------------------------


def test_state_dict_restores_the_coefficient_exactly():
    config = LONG.replace(entropy_schedule="cosine")
    trained = hee.HybridEntropyRegularizer(config)
    trained.step(123)
    logits, log_std = random_heads(dtype=torch.float64)
    expected = trained(logits, log_std)

    restored = hee.HybridEntropyRegularizer(config)
    restored.load_state_dict(trained.state_dict())
    assert restored.episode_counter.item() == 123
    assert_outputs_equal(restored(logits, log_std), expected)


def test_state_dict_restores_through_torch_save(tmp_path):
    trained = hee.HybridEntropyRegularizer(LONG)
    trained.step(77)
    torch.save(trained.state_dict(), tmp_path / "reg.pt")
    restored = hee.HybridEntropyRegularizer(LONG)
    restored.load_state_dict(torch.load(tmp_path / "reg.pt"))
    assert restored(*random_heads(dtype=torch.float64))["current_entropy_coeff"].item() == pytest.approx(
        0.1 * (1 - 77 / 500) + 0.001 * 77 / 500, rel=1e-12)


class Policy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.regularizer = hee.HybridEntropyRegularizer(LONG)


def _version_1_state_dict(module: nn.Module) -> Dict[str, Tensor]:
    # A version-1 state_dict: no counter, the regularizer's metadata at version 1.
    state = module.state_dict()
    del state["regularizer.episode_counter"]
    state._metadata["regularizer"]["version"] = 1
    return state


def test_version_1_checkpoint_loads_strictly_with_the_counter_at_0():
    old = _version_1_state_dict(Policy())
    policy = Policy()
    policy.regularizer.step(9)
    policy.load_state_dict(old)  # strict
    assert policy.regularizer.episode_counter.item() == 0
    assert torch.equal(policy.head.weight, old["head.weight"])


def test_version_2_checkpoint_without_the_counter_is_an_error():
    state = Policy().state_dict()
    del state["regularizer.episode_counter"]
    with pytest.raises(RuntimeError, match="regularizer.episode_counter"):
        Policy().load_state_dict(state)


VERSION_2_ATTRIBUTES = ("distributed", "process_group")


def _as_version_1_object(reg: nn.Module) -> nn.Module:
    # A whole-module pickle at version 1 holds none of the version-2 attributes,
    # submodules or buffer.
    for name in VERSION_2_ATTRIBUTES + ("discrete_controller", "continuous_controller"):
        del reg.__dict__[name]  # (a submodule attribute set to None lives in __dict__)
    del reg._buffers["episode_counter"]
    for name in VERSION_2_ATTRIBUTES + ("discrete_controller", "continuous_controller", "episode_counter"):
        assert not hasattr(reg, name), name
    return reg


@pytest.mark.parametrize("config", [LONG, LONG.replace(enable_adaptive_entropy=False)])
def test_version_1_whole_module_pickle_loads_and_computes_as_before(tmp_path, config):
    old = _as_version_1_object(hee.HybridEntropyRegularizer(config))
    torch.save(old, tmp_path / "regularizer.pt")
    loaded = torch.load(tmp_path / "regularizer.pt", weights_only=False)
    logits, log_std = random_heads(dtype=torch.float64)
    assert_outputs_equal(loaded(logits, log_std, 250), hee.HybridEntropyRegularizer(config)(logits, log_std, 250))
    # The version-2 features work on it: the counter (at 0), step, state_dict.
    assert loaded.episode_counter.item() == 0 and loaded.episode_counter.dtype == torch.int64
    loaded.step(250)
    assert_outputs_equal(loaded(logits, log_std), hee.HybridEntropyRegularizer(config)(logits, log_std, 250))
    assert list(loaded.state_dict()) == ["episode_counter"]
    assert loaded.discrete_controller is None and loaded.continuous_controller is None
    assert not loaded.distributed


def test_version_1_pickle_inside_a_policy_loads(tmp_path):
    import pickle

    policy = Policy()
    _as_version_1_object(policy.regularizer)
    loaded = pickle.loads(pickle.dumps(policy))
    logits, log_std = random_heads(dtype=torch.float64)
    assert_outputs_equal(loaded.regularizer(logits, log_std, 3), hee.HybridEntropyRegularizer(LONG)(logits, log_std, 3))


def test_version_2_pickle_keeps_its_own_state(tmp_path):
    import pickle

    reg = hee.HybridEntropyRegularizer(
        LONG, discrete_controller=hee.TargetEntropyController(0.5, "adaptive", initial_coeff=0.2))
    reg.step(17)
    loaded = pickle.loads(pickle.dumps(reg))
    assert loaded.episode_counter.item() == 17
    assert isinstance(loaded.discrete_controller, hee.TargetEntropyController)
    assert loaded.discrete_controller.gates_term
    logits = torch.zeros(6, 5, dtype=torch.float64)  # H_d = log 5 > 0.5: the gated term is 0
    log_std = random_heads(dtype=torch.float64)[1]
    assert loaded(logits, log_std)["discrete"].item() == 0.0
    assert_outputs_equal(loaded(logits, log_std), reg(logits, log_std))


# --- a schedule of the user's ---------------------------------------------------------------


class HalvingSchedule(nn.Module):
    """0.08 halved every 100 episodes: a scriptable schedule without a tensor form."""

    def forward(self, episode: int) -> float:
        return 0.08 * 0.5 ** (episode // 100)


def test_user_module_schedule_replaces_the_config_schedule():
    reg = hee.HybridEntropyRegularizer(LONG, schedule=HalvingSchedule())
    assert reg.compute_adaptive_entropy_coefficient(250) == 0.02
    assert reg(*random_heads(dtype=torch.float64), 250)["current_entropy_coeff"].item() == 0.02


def test_user_module_schedule_without_tensor_form_follows_the_counter():
    reg = hee.HybridEntropyRegularizer(LONG, schedule=HalvingSchedule())
    reg.step(100)
    assert reg(*random_heads(dtype=torch.float64))["current_entropy_coeff"].item() == 0.04


def test_user_callable_schedule_is_called_with_the_episode():
    seen = []

    def schedule(episode):
        seen.append(episode)
        return np.float32(0.25)  # what a NumPy-based schedule returns

    reg = hee.HybridEntropyRegularizer(LONG, schedule=schedule)
    reg.step(5)
    assert reg(*random_heads(dtype=torch.float64))["current_entropy_coeff"].item() == 0.25
    assert seen == [5]


@pytest.mark.parametrize("episode, error", [(-3, ValueError), (1.5, TypeError)], ids=["negative", "fractional"])
def test_a_user_schedule_is_not_called_with_a_bad_episode(episode, error):
    seen = []
    reg = hee.HybridEntropyRegularizer(LONG, schedule=lambda e: seen.append(e) or 0.1)
    with pytest.raises(error, match=r"episode: expected an integer number of episodes >= 0"):
        reg(*random_heads(dtype=torch.float64), episode)
    assert seen == []


@pytest.mark.parametrize(
    "returned, error, message",
    [(-0.5, ValueError, r"schedule\(3\): expected a finite number >= 0, got -0.5"),
     (torch.tensor(0.1), TypeError, r"schedule\(3\): expected a finite number >= 0, got tensor"),
     (None, TypeError, r"schedule\(3\): expected a finite number >= 0, got None")],
)
def test_user_schedule_returning_a_bad_value_is_named(returned, error, message):
    reg = hee.HybridEntropyRegularizer(LONG, schedule=lambda episode: returned)
    with pytest.raises(error, match=message):
        reg(*random_heads(dtype=torch.float64), 3)


class NegativeSchedule(nn.Module):
    def forward(self, episode: int) -> float:
        return -0.5


def test_schedule_assigned_after_construction_has_its_output_checked():
    reg = hee.HybridEntropyRegularizer(LONG)
    reg.schedule = NegativeSchedule()
    with pytest.raises(ValueError, match=r"schedule\(3\): expected a finite number >= 0, got -0.5"):
        reg(*random_heads(dtype=torch.float64), 3)


def test_schedule_that_is_not_callable_is_a_type_error():
    with pytest.raises(TypeError, match=r"schedule: expected an nn.Module or a callable .*got 0.1 \(float\)"):
        hee.HybridEntropyRegularizer(LONG, schedule=0.1)


def test_scripted_regularizer_with_a_scriptable_user_schedule_matches_eager():
    import copy

    eager = hee.HybridEntropyRegularizer(LONG, schedule=HalvingSchedule())
    # Scripting a module shares its buffers with it: script a copy, so that the scripted
    # step must move its own counter.
    scripted = torch.jit.script(copy.deepcopy(eager))
    assert scripted.episode_counter.data_ptr() != eager.episode_counter.data_ptr()
    logits, log_std = random_heads(dtype=torch.float64)
    for episode in (0, 150, 420):
        assert_outputs_equal(scripted(logits, log_std, episode), eager(logits, log_std, episode))
    scripted.step(300)
    assert (scripted.episode_counter.item(), eager.episode_counter.item()) == (300, 0)
    eager.step(300)
    assert_outputs_equal(scripted(logits, log_std), eager(logits, log_std))
    assert scripted(logits, log_std)["current_entropy_coeff"].item() == 0.08 * 0.5 ** 3
    scripted.step(100)
    eager.step(100)
    assert scripted.episode_counter.item() == eager.episode_counter.item() == 400
    assert_outputs_equal(scripted(logits, log_std), eager(logits, log_std))


def test_scripted_regularizer_with_a_python_callable_raises_when_called():
    scripted = torch.jit.script(hee.HybridEntropyRegularizer(LONG, schedule=lambda episode: 0.1))
    with pytest.raises(torch.jit.Error, match="ignored"):
        scripted(*random_heads(dtype=torch.float64), 0)


# --- no host read of the counter off the CPU ------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine", "exponential", "piecewise", "constant"])
def test_forward_without_episode_reads_nothing_on_the_host_off_the_cpu(schedule):
    # Meta tensors have no data: any .item(), int() or bool() of one raises. A regularizer
    # moved there must compute its coefficient (and its controllers') with tensor ops only.
    config = LONG.replace(
        entropy_schedule=schedule if schedule != "constant" else "linear",
        enable_adaptive_entropy=schedule != "constant",
        entropy_schedule_points=[[0, 0.1], [300, 0.0]] if schedule == "piecewise" else None,
        target_entropy_control="adaptive",
        discrete_target_entropy=0.5,
    )
    reg = hee.HybridEntropyRegularizer(config).to("meta")
    logits = torch.empty(6, 5, device="meta")
    log_std = torch.empty(6, 3, device="meta")
    reg.step(4)
    out = reg(logits, log_std)
    reg.update_controllers(out)
    assert set(out) == set(KEYS) | {"current_entropy_coeff", *PER_HEAD_KEYS}
    assert all(value.device.type == "meta" and value.dim() == 0 for value in out.values())


# --- target-entropy controllers ---------------------------------------------------------------


def test_controlled_head_gets_the_controller_coefficient_and_the_other_the_schedule():
    controller = hee.TargetEntropyController(5.0, "adaptive", initial_coeff=0.04, only_below_target=False)
    reg = hee.HybridEntropyRegularizer(LONG, discrete_controller=controller)
    logits, log_std = random_heads(dtype=torch.float64)
    out = reg(logits, log_std, 250)
    # long at episode 250: 0.0505 for the continuous head; 0.04 from the controller.
    expected = distributions_oracle(logits, log_std, torch.tensor([0.04, 0.0505], dtype=torch.float64))
    for key in KEYS:
        torch.testing.assert_close(out[key], expected[key], rtol=1e-6, atol=1e-9, msg=key)
    assert out["discrete_entropy_coeff"].item() == pytest.approx(0.04, rel=1e-6)
    assert out["continuous_entropy_coeff"].item() == pytest.approx(0.0505, rel=1e-12)
    assert out["current_entropy_coeff"].item() == pytest.approx(0.0505, rel=1e-12)


def test_per_head_coefficient_outputs_are_the_controllers_float32_coefficient():
    controller = hee.TargetEntropyController(5.0, "adaptive", initial_coeff=0.04, only_below_target=False)
    reg = hee.HybridEntropyRegularizer(LONG, discrete_controller=controller)
    logits, log_std = random_heads()
    out = reg(logits, log_std, 250)
    assert out["discrete_entropy_coeff"].dtype == torch.float32
    assert torch.equal(out["discrete_entropy_coeff"], controller.coefficient())
    assert torch.equal(out["continuous_entropy_coeff"], out["current_entropy_coeff"])
    out64 = reg(*random_heads(dtype=torch.float64), 250)
    assert torch.equal(out64["discrete_entropy_coeff"], controller.coefficient().double())


def test_both_heads_controlled_take_their_own_coefficients():
    reg = hee.HybridEntropyRegularizer(
        LONG,
        discrete_controller=hee.TargetEntropyController(0.5, "sac", initial_coeff=0.2),
        continuous_controller=hee.TargetEntropyController(-1.0, "sac", initial_coeff=0.03),
    )
    logits, log_std = random_heads(dtype=torch.float64)
    out = reg(logits, log_std, 0)
    expected = distributions_oracle(logits, log_std, torch.tensor([0.2, 0.03], dtype=torch.float64))
    torch.testing.assert_close(out["total"], expected["total"], rtol=1e-6, atol=1e-9)


def test_without_controllers_the_output_has_no_per_head_coefficients():
    assert not set(PER_HEAD_KEYS) & set(hee.HybridEntropyRegularizer(LONG)(*random_heads(dtype=torch.float64), 0))


def test_adaptive_head_above_its_target_contributes_no_entropy_term():
    # Uniform logits over 5 actions: H_d = log 5 = 1.61 > target 1.0.
    reg = hee.HybridEntropyRegularizer(
        LONG, min_entropy_threshold=None,
        discrete_controller=hee.TargetEntropyController(1.0, "adaptive", initial_coeff=0.3),
    )
    logits = torch.zeros(4, 5, dtype=torch.float64, requires_grad=True)
    log_std = torch.zeros(4, 2, dtype=torch.float64)
    out = reg(logits, log_std, 0)
    assert out["discrete"].item() == 0.0
    assert out["total"].item() == pytest.approx(out["continuous"].item(), rel=1e-15)
    out["total"].backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_controllers_assigned_after_construction_are_honored():
    # Uniform logits over 5 actions: H_d = log 5 = 1.61, above a target of 1.0.
    reg = hee.HybridEntropyRegularizer(LONG, min_entropy_threshold=None)
    logits = torch.zeros(4, 5, dtype=torch.float64)
    log_std = torch.zeros(4, 2, dtype=torch.float64)
    ungated = reg(logits, log_std, 0)["discrete"].item()
    assert ungated == pytest.approx(-0.1 * math.log(5), rel=1e-12)
    reg.discrete_controller = hee.TargetEntropyController(1.0, "adaptive", initial_coeff=0.1)
    assert reg(logits, log_std, 0)["discrete"].item() == 0.0  # gated: above the target
    reg.discrete_controller = hee.TargetEntropyController(1.0, "adaptive", initial_coeff=0.1,
                                                          only_below_target=False)
    assert reg(logits, log_std, 0)["discrete"].item() == pytest.approx(ungated, rel=1e-6)
    reg.discrete_controller = None
    out = reg(logits, log_std, 0)
    assert out["discrete"].item() == ungated and not set(PER_HEAD_KEYS) & set(out)


def test_adaptive_head_below_its_target_contributes_its_entropy_term():
    reg = hee.HybridEntropyRegularizer(
        LONG, min_entropy_threshold=None,
        discrete_controller=hee.TargetEntropyController(2.0, "adaptive", initial_coeff=0.3),
    )
    logits = torch.zeros(4, 5, dtype=torch.float64)
    out = reg(logits, torch.zeros(4, 2, dtype=torch.float64), 0)
    assert out["discrete"].item() == pytest.approx(-0.3 * 1.0 * math.log(5), rel=1e-6)


def test_adaptive_head_below_target_gets_the_gradient_of_its_term():
    reg = hee.HybridEntropyRegularizer(
        LONG, min_entropy_threshold=None,
        discrete_controller=hee.TargetEntropyController(2.0, "adaptive", initial_coeff=0.25),
    )
    logits, log_std = random_heads(dtype=torch.float64)
    leaves = [logits.clone().requires_grad_(), log_std.clone().requires_grad_()]
    reg(*leaves, 250)["total"].backward()
    oracle_leaves = [logits.clone().requires_grad_(), log_std.clone().requires_grad_()]
    coeff = torch.tensor([0.25, 0.0505], dtype=torch.float64)
    distributions_oracle(*oracle_leaves, coeff, 1.0, 0.5, None, None)["total"].backward()
    for leaf, oracle_leaf in zip(leaves, oracle_leaves):
        torch.testing.assert_close(leaf.grad, oracle_leaf.grad, rtol=1e-6, atol=1e-9)


def test_update_controllers_steps_each_controller_from_its_head_entropy():
    reg = hee.HybridEntropyRegularizer(
        LONG,
        discrete_controller=hee.TargetEntropyController(5.0, "adaptive", initial_coeff=0.1, delta=0.01),
        continuous_controller=hee.TargetEntropyController(-5.0, "adaptive", initial_coeff=0.1, delta=0.01),
    )
    out = reg(*random_heads(dtype=torch.float64), 0)  # H_d <= log 5 < 5: up; H_c ~ 4.3 > -5: down
    reg.update_controllers(out)
    assert reg.discrete_controller.coefficient().item() == pytest.approx(0.11, rel=1e-6)
    assert reg.continuous_controller.coefficient().item() == pytest.approx(0.09, rel=1e-6)


def test_controller_loss_is_the_sac_temperature_loss():
    reg = hee.HybridEntropyRegularizer(
        LONG, discrete_controller=hee.TargetEntropyController(0.5, "sac", initial_coeff=0.2))
    out = reg(*random_heads(dtype=torch.float64), 0)
    loss = reg.controller_loss(out)
    assert loss.item() == pytest.approx(math.log(0.2) * (out["discrete_entropy"].item() - 0.5), rel=1e-6)
    assert [name for name, _ in reg.named_parameters()] == ["discrete_controller.log_coeff"]


def test_controller_loss_is_zero_without_controllers():
    reg = hee.HybridEntropyRegularizer(LONG)
    assert reg.controller_loss(reg(*random_heads(dtype=torch.float64), 0)).item() == 0.0


def test_sac_controller_loss_trains_only_the_coefficient():
    reg = hee.HybridEntropyRegularizer(
        LONG, discrete_controller=hee.TargetEntropyController(0.5, "sac", initial_coeff=0.2))
    logits = torch.randn(6, 5, requires_grad=True)
    reg.controller_loss(reg(logits, None, 0)).backward()
    assert logits.grad is None
    assert reg.discrete_controller.log_coeff.grad is not None


def test_controllers_come_from_the_config():
    config = EntropyRegularizationConfig.from_yaml(
        "target_entropy_control: adaptive\ndiscrete_target_entropy: 0.4\ncontroller_delta: 0.005\n")
    reg = hee.HybridEntropyRegularizer(config)
    assert isinstance(reg.discrete_controller, hee.TargetEntropyController)
    assert (reg.discrete_controller.target_entropy, reg.discrete_controller.delta) == (0.4, 0.005)
    assert reg.continuous_controller is None


def test_a_given_controller_replaces_the_configs():
    config = LONG.replace(target_entropy_control="sac", discrete_target_entropy=0.4)
    mine = hee.TargetEntropyController(0.9, "adaptive")
    reg = hee.HybridEntropyRegularizer(config, discrete_controller=mine)
    assert reg.discrete_controller is mine


def test_controller_of_the_wrong_type_is_named():
    with pytest.raises(TypeError, match=r"continuous_controller: expected a TargetEntropyController or None"):
        hee.HybridEntropyRegularizer(LONG, continuous_controller=0.3)


def test_state_dict_restores_controllers_and_counter_exactly():
    def make():
        return hee.HybridEntropyRegularizer(
            LONG,
            discrete_controller=hee.TargetEntropyController(5.0, "adaptive", delta=0.003),
            continuous_controller=hee.TargetEntropyController(1.0, "sac"),
        )

    trained = make()
    logits, log_std = random_heads(dtype=torch.float64)
    for _ in range(3):
        trained.update_controllers(trained(logits, log_std))
        trained.step()
    restored = make()
    restored.load_state_dict(trained.state_dict())
    assert_outputs_equal(restored(logits, log_std), trained(logits, log_std))


# --- TorchScript and torch.compile with controllers -----------------------------------------


class PolicyWithController(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.log_std = nn.Parameter(torch.full((2,), -0.5))
        self.regularizer = hee.HybridEntropyRegularizer(
            EntropyRegularizationConfig.preset("short"),
            min_entropy_threshold=2.0,
            discrete_controller=hee.TargetEntropyController(3.0, mode, initial_coeff=0.07, delta=0.01),
        )

    def forward(self, obs: Tensor) -> Dict[str, Tensor]:
        out = self.regularizer(self.body(obs), self.log_std)
        self.regularizer.update_controllers(out)
        self.regularizer.step(1)
        return out


def _run_steps(module: nn.Module, obs: Tensor, steps: int = 3, call=None):
    results = []
    for _ in range(steps):
        module.zero_grad(set_to_none=True)
        out = (call if call is not None else module)(obs)
        out["total"].backward()
        grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
        results.append(({k: v.detach() for k, v in out.items()}, grads))
    return results


@pytest.mark.parametrize("mode", ["sac", "adaptive"])
def test_scripted_regularizer_with_a_controller_matches_eager_over_steps(mode):
    torch.manual_seed(1)
    eager = PolicyWithController(mode)
    scripted = torch.jit.script(PolicyWithController(mode))
    scripted.load_state_dict(eager.state_dict())
    obs = torch.randn(9, 6)
    for (got_out, got_grads), (exp_out, exp_grads) in zip(_run_steps(scripted, obs), _run_steps(eager, obs)):
        assert set(got_out) == set(exp_out) == set(KEYS) | {"current_entropy_coeff", *PER_HEAD_KEYS}
        for key in exp_out:
            torch.testing.assert_close(got_out[key], exp_out[key], msg=key)
        assert set(got_grads) == set(exp_grads)
        for name in exp_grads:
            torch.testing.assert_close(got_grads[name], exp_grads[name], msg=name)
    assert scripted.regularizer.episode_counter.item() == eager.regularizer.episode_counter.item() == 3


@pytest.mark.parametrize("mode", ["sac", "adaptive"])
def test_compiled_regularizer_with_a_controller_and_the_counter_matches_eager(mode):
    torch._dynamo.reset()
    torch.manual_seed(2)
    eager = PolicyWithController(mode)
    compiled_module = PolicyWithController(mode)
    compiled_module.load_state_dict(eager.state_dict())
    # fullgraph: reading the counter or a coefficient on the host would break the graph.
    compiled = torch.compile(compiled_module, backend="aot_eager", fullgraph=True)
    obs = torch.randn(9, 6)
    got = _run_steps(compiled_module, obs, call=compiled)
    expected = _run_steps(eager, obs)
    for (got_out, got_grads), (exp_out, exp_grads) in zip(got, expected):
        for key in exp_out:
            torch.testing.assert_close(got_out[key], exp_out[key], rtol=1e-6, atol=1e-7, msg=key)
        for name in exp_grads:
            torch.testing.assert_close(got_grads[name], exp_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    assert compiled_module.regularizer.episode_counter.item() == 3
    torch._dynamo.reset()


def test_exported_module_without_episode_computes_the_coefficient_from_the_counter():
    class Module(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.regularizer = hee.HybridEntropyRegularizer(EntropyRegularizationConfig.preset("short"))

        def forward(self, logits: Tensor, log_std: Tensor) -> Dict[str, Tensor]:
            return self.regularizer(logits, log_std)

    module = Module()
    module.regularizer.step(37)
    logits, log_std = random_heads()
    exported = torch.export.export(module, (logits, log_std))
    got = exported.module()(logits, log_std)
    # short: 0.05 -> 0.01 over 200 episodes; at 37: 0.05 (1 - 37/200) + 0.01 * 37/200 = 0.0426
    assert got["current_entropy_coeff"].item() == pytest.approx(0.0426, rel=1e-6)
    assert_outputs_equal(got, module(logits, log_std))


FRESH_PROCESS = """
import sys
import torch

library, module_path, obs_path, result_path = sys.argv[1:]
torch.ops.load_library(library)                  # the op library only, not the package
module = torch.jit.load(module_path)
obs = torch.load(obs_path)
outs = [{k: v.detach() for k, v in module(obs).items()} for _ in range(3)]
torch.save({"outs": outs, "state": module.state_dict(), "package": "hybrid_entropy_ext" in sys.modules},
           result_path)
"""


@pytest.mark.parametrize("mode", ["sac", "adaptive"])
def test_saved_scripted_module_with_counter_and_controller_runs_without_the_package(tmp_path, mode):
    import subprocess
    import sys

    from hybrid_entropy_ext import _ops

    torch.manual_seed(3)
    eager = PolicyWithController(mode)
    scripted = torch.jit.script(PolicyWithController(mode))
    scripted.load_state_dict(eager.state_dict())
    scripted.save(str(tmp_path / "policy.pt"))
    obs = torch.randn(9, 6)
    torch.save(obs, tmp_path / "obs.pt")
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, _ops.library_path(), str(tmp_path / "policy.pt"),
         str(tmp_path / "obs.pt"), str(tmp_path / "result.pt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = torch.load(tmp_path / "result.pt")
    assert result["package"] is False
    for got, (expected, _) in zip(result["outs"], _run_steps(eager, obs)):
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], msg=key)
    assert result["state"]["regularizer.episode_counter"].item() == 3


# --- on a GPU: the counter and a controller, no host sync -------------------------------------


@needs_cuda
@pytest.mark.parametrize("mode", ["sac", "adaptive"])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "exponential", "piecewise", "constant"])
def test_training_step_with_the_counter_and_a_controller_on_cuda_makes_no_host_sync(schedule, mode):
    import copy

    torch.manual_seed(4)
    regularizer = hee.HybridEntropyRegularizer(
        _config(schedule),
        discrete_controller=hee.TargetEntropyController(0.5, mode, initial_coeff=0.05, delta=0.004),
    )
    regularizer.step(137)
    twin = copy.deepcopy(regularizer)  # the same steps on the CPU (host read of the counter)
    regularizer.cuda()
    assert regularizer.episode_counter.device.type == "cuda"
    logits = torch.randn(16, 5)
    log_std = torch.full((3,), -0.2)

    def leaves_on(device):
        # Fresh copies each step (on the CPU too: .to("cpu") alone would return the same
        # tensors, whose gradients would accumulate over the steps).
        return [logits.to(device, copy=True), log_std.to(device, copy=True)]

    def training_step(module, leaves):
        leaves = [leaf.requires_grad_() for leaf in leaves]
        out = module(*leaves)  # no episode: the counter
        (out["total"] + module.controller_loss(out)).backward()
        module.update_controllers(out)
        module.step()
        return out, leaves

    # Warm-up (allocations, lazy initialization); the inputs are copied to the GPU outside
    # the checked region, where a host-to-device copy would count as a sync.
    training_step(regularizer, leaves_on("cuda"))
    leaves = leaves_on("cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, leaves = training_step(regularizer, leaves)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()

    training_step(twin, leaves_on("cpu"))
    expected, expected_leaves = training_step(twin, leaves_on("cpu"))
    assert regularizer.episode_counter.item() == twin.episode_counter.item() == 139
    assert set(out) == set(expected)
    for key in expected:
        assert out[key].device.type == "cuda"
        torch.testing.assert_close(out[key].cpu(), expected[key], rtol=1e-5, atol=1e-6, msg=key)
    for leaf, expected_leaf in zip(leaves, expected_leaves):
        torch.testing.assert_close(leaf.grad.cpu(), expected_leaf.grad, rtol=1e-5, atol=1e-6)
    assert out["continuous_entropy_coeff"].item() == pytest.approx(_expected_coefficient(schedule, 138), rel=1e-6)
    torch.testing.assert_close(regularizer.discrete_controller.coefficient().cpu(),
                               twin.discrete_controller.coefficient(), rtol=1e-6, atol=0.0)
