"""``hee.TargetEntropyController``: the sac and adaptive rules, bounds, errors, TorchScript, compile."""

import math

import numpy as np
import pytest
import torch

import hybrid_entropy_ext as hee
from common_utils import needs_cuda

# TorchScript support is part of the contract, so its deprecation notice is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

Controller = hee.TargetEntropyController
BELOW, ABOVE = torch.tensor(0.1), torch.tensor(0.5)  # around a target of 0.3 nats


# --- adaptive mode ------------------------------------------------------------------------


def test_adaptive_update_below_target_adds_delta():
    controller = Controller(0.3, "adaptive", initial_coeff=0.01, delta=0.002)
    controller.update(BELOW)
    assert controller.coefficient().item() == pytest.approx(0.012, rel=1e-6)


def test_adaptive_update_above_target_subtracts_delta():
    controller = Controller(0.3, "adaptive", initial_coeff=0.01, delta=0.002)
    controller.update(ABOVE)
    assert controller.coefficient().item() == pytest.approx(0.008, rel=1e-6)


def test_adaptive_update_at_the_target_subtracts_delta():
    # "below" is strict: at the target the entropy is not below it.
    controller = Controller(0.25, "adaptive", initial_coeff=0.01, delta=0.002)
    controller.update(torch.tensor(0.25))
    assert controller.coefficient().item() == pytest.approx(0.008, rel=1e-6)


def test_adaptive_coefficient_stops_at_max_coeff():
    controller = Controller(0.3, "adaptive", initial_coeff=0.05, max_coeff=0.06, delta=0.004)
    for _ in range(5):
        controller.update(BELOW)
    assert controller.coefficient().item() == pytest.approx(0.06, rel=1e-6)
    assert controller.coeff.item() == pytest.approx(0.06, rel=1e-6)  # the state too, not only the reading


def test_adaptive_coefficient_stops_at_min_coeff():
    controller = Controller(0.3, "adaptive", initial_coeff=0.01, min_coeff=0.004, delta=0.004)
    for _ in range(5):
        controller.update(ABOVE)
    assert controller.coefficient().item() == pytest.approx(0.004, rel=1e-6)


def test_adaptive_update_is_in_place_on_the_buffer():
    controller = Controller(0.3, "adaptive")
    storage = controller.coeff.data_ptr()
    controller.update(BELOW)
    assert controller.coeff.data_ptr() == storage
    assert [name for name, _ in controller.named_buffers()] == ["coeff"]
    assert list(controller.parameters()) == []


def test_adaptive_loss_is_zero_without_gradient():
    loss = Controller(0.3, "adaptive").loss(torch.tensor(0.1, requires_grad=True))
    assert loss.item() == 0.0 and not loss.requires_grad


def test_adaptive_term_is_active_only_below_target_by_default():
    controller = Controller(0.3, "adaptive")
    assert controller.term_active(BELOW).item() is True
    assert controller.term_active(ABOVE).item() is False


def test_adaptive_term_is_always_active_when_told_so():
    controller = Controller(0.3, "adaptive", only_below_target=False)
    assert controller.term_active(ABOVE).item() is True


def test_coefficient_is_a_fresh_0_dim_tensor_that_a_later_update_leaves_alone():
    controller = Controller(0.3, "adaptive", initial_coeff=0.01, delta=0.002)
    before = controller.coefficient()
    controller.update(BELOW)
    assert before.dim() == 0 and before.item() == pytest.approx(0.01, rel=1e-6)
    assert not before.requires_grad


# --- sac mode -----------------------------------------------------------------------------


def test_sac_learns_the_log_of_the_coefficient():
    controller = Controller(0.3, "sac", initial_coeff=0.2)
    (name, parameter), = controller.named_parameters()
    assert name == "log_coeff" and isinstance(parameter, torch.nn.Parameter)
    assert parameter.item() == pytest.approx(math.log(0.2), rel=1e-6)
    assert controller.coefficient().item() == pytest.approx(0.2, rel=1e-6)


def test_sac_loss_is_log_coeff_times_entropy_minus_target():
    controller = Controller(0.3, "sac", initial_coeff=0.2)
    loss = controller.loss(torch.tensor(0.1))
    assert loss.item() == pytest.approx(math.log(0.2) * (0.1 - 0.3), rel=1e-6)
    loss.backward()
    assert controller.log_coeff.grad.item() == pytest.approx(0.1 - 0.3, rel=1e-6)


def test_sac_loss_does_not_reach_the_entropy():
    entropy = torch.tensor(0.1, requires_grad=True)
    Controller(0.3, "sac").loss(entropy).backward()
    assert entropy.grad is None


@pytest.mark.parametrize("entropy, grows", [(BELOW, True), (ABOVE, False)])
def test_sac_optimizer_step_raises_the_coefficient_below_target_and_lowers_it_above(entropy, grows):
    controller = Controller(0.3, "sac", initial_coeff=0.1)
    optimizer = torch.optim.SGD(controller.parameters(), lr=0.5)
    controller.loss(entropy).backward()
    optimizer.step()
    # SGD: log c <- log c - 0.5 (H - 0.3); by hand exp(log 0.1 + 0.1) or exp(log 0.1 - 0.1).
    expected = 0.1 * math.exp(0.1 if grows else -0.1)
    assert controller.coefficient().item() == pytest.approx(expected, rel=1e-6)


def test_sac_coefficient_is_clamped_to_the_bounds():
    controller = Controller(0.3, "sac", initial_coeff=0.1, min_coeff=0.05, max_coeff=0.2)
    with torch.no_grad():
        controller.log_coeff.fill_(math.log(5.0))
    assert controller.coefficient().item() == pytest.approx(0.2, rel=1e-6)


def test_sac_update_pulls_log_coeff_back_into_the_bounds():
    controller = Controller(0.3, "sac", initial_coeff=0.1, min_coeff=0.05, max_coeff=0.2)
    with torch.no_grad():
        controller.log_coeff.fill_(math.log(0.001))
    controller.update(BELOW)
    assert controller.log_coeff.item() == pytest.approx(math.log(0.05), rel=1e-6)


def test_sac_term_is_always_active():
    assert Controller(0.3, "sac").term_active(ABOVE).item() is True


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"mode": "pid"}, ValueError, r"mode: expected one of sac, adaptive, got 'pid'"),
        ({"mode": None}, TypeError, r"mode: expected one of sac, adaptive, got None"),
        ({"target_entropy": math.nan}, ValueError, r"target_entropy: expected a finite number of nats, got nan"),
        ({"target_entropy": True}, TypeError, r"target_entropy: expected a finite number of nats, got True"),
        ({"target_entropy": "0.3"}, TypeError, r"target_entropy"),
        ({"min_coeff": 0.5, "max_coeff": 0.1}, ValueError, r"min_coeff: expected <= max_coeff \(0.1\), got 0.5"),
        ({"initial_coeff": 2.0}, ValueError, r"initial_coeff: expected a number in \[min_coeff, max_coeff\]"),
        ({"delta": -0.1}, ValueError, r"delta: expected a finite number >= 0, got -0.1"),
        ({"mode": "sac", "initial_coeff": 0.0}, ValueError, r"initial_coeff: expected a number > 0 in sac mode"),
        ({"only_below_target": 1}, TypeError, r"only_below_target: expected a bool, got 1"),
    ],
)
def test_bad_argument_is_named(kwargs, error, message):
    arguments = {"target_entropy": 0.3, "mode": "adaptive", **kwargs}
    with pytest.raises(error, match=message):
        Controller(**arguments)


def test_negative_target_is_allowed_for_a_differential_entropy():
    assert Controller(-1.5, "sac").target_entropy == -1.5


def test_numpy_scalars_are_accepted():
    controller = Controller(np.float32(0.3), "adaptive", np.float32(0.01), np.float64(0.0), np.float32(1.0),
                            np.float32(0.002))
    assert (controller.target_entropy, controller.delta) == (0.3, 0.002)
    assert controller.coefficient().item() == pytest.approx(0.01, rel=1e-6)


# --- TorchScript and torch.compile --------------------------------------------------------


@pytest.mark.parametrize("mode", ["sac", "adaptive"])
def test_scripted_controller_matches_eager(mode):
    eager = Controller(0.3, mode, initial_coeff=0.1, max_coeff=0.5, delta=0.01)
    scripted = torch.jit.script(Controller(0.3, mode, initial_coeff=0.1, max_coeff=0.5, delta=0.01))
    for entropy in (BELOW, ABOVE, BELOW, BELOW):
        assert torch.equal(scripted.coefficient(), eager.coefficient())
        assert torch.equal(scripted.loss(entropy).detach(), eager.loss(entropy).detach())
        assert torch.equal(scripted.term_active(entropy), eager.term_active(entropy))
        scripted.update(entropy)
        eager.update(entropy)
    assert {k: v.item() for k, v in scripted.state_dict().items()} == {
        k: v.item() for k, v in eager.state_dict().items()}


def test_compiled_update_and_coefficient_run_in_one_graph_as_eager():
    # fullgraph: a host read (.item(), bool(tensor)) in update or coefficient would break the graph.
    def control_step(controller, entropy):
        controller.update(entropy)
        return controller.coefficient()

    compiled = torch.compile(control_step, backend="eager", fullgraph=True)
    eager_controller = Controller(0.3, "adaptive", initial_coeff=0.01, delta=0.002)
    compiled_controller = Controller(0.3, "adaptive", initial_coeff=0.01, delta=0.002)
    for entropy in (BELOW, BELOW, ABOVE):
        assert torch.equal(compiled(compiled_controller, entropy), control_step(eager_controller, entropy))


@needs_cuda
@pytest.mark.parametrize("mode", ["sac", "adaptive"])
def test_controller_on_cuda_makes_no_host_sync(mode):
    controller = Controller(0.3, mode, device="cuda")
    entropy = torch.tensor(0.1, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        coefficient = controller.coefficient()
        controller.loss(entropy)
        controller.update(entropy)
        controller.term_active(entropy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert coefficient.device.type == "cuda" and coefficient.dim() == 0


# --- the state's dtype ----------------------------------------------------------------------


class PolicyWithControllers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(3, 2)
        self.adaptive = Controller(5.0, "adaptive", initial_coeff=0.3, delta=0.001)
        self.sac = Controller(5.0, "sac", initial_coeff=0.3)


@pytest.mark.parametrize("cast", ["to_bfloat16", "half", "bfloat16", "double", "to_device_and_dtype"])
def test_state_stays_float32_through_a_parents_dtype_cast(cast):
    policy = PolicyWithControllers()
    log_coeff = policy.sac.log_coeff
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    {
        "to_bfloat16": lambda: policy.to(torch.bfloat16),
        "half": policy.half,
        "bfloat16": policy.bfloat16,
        "double": policy.double,
        "to_device_and_dtype": lambda: policy.to("cpu", torch.float16),
    }[cast]()
    assert policy.body.weight.dtype != torch.float32  # the rest of the model was cast
    assert policy.adaptive.coeff.dtype == policy.sac.log_coeff.dtype == torch.float32
    assert policy.sac.log_coeff is log_coeff  # the same Parameter: the optimizer still holds it
    assert optimizer.param_groups[0]["params"][-1] is log_coeff
    # The initial values are untouched (not rounded through the cast's dtype).
    assert policy.adaptive.coeff.item() == torch.tensor(0.3).item()
    assert policy.sac.log_coeff.item() == torch.tensor(math.log(0.3)).item()
    for controller in (policy.adaptive, policy.sac):
        coefficient = controller.coefficient()
        assert coefficient.dtype == torch.float32 and coefficient.device.type == "cpu" and coefficient.dim() == 0


def test_adaptive_updates_after_a_bfloat16_cast_step_on_the_float32_grid():
    # In bfloat16 0.3 + 0.001 rounds back to 0.3 (its spacing there is 2^-9): 100 steps would
    # not move it. In float32 they reach 0.4 within float32 rounding.
    policy = PolicyWithControllers().to(torch.bfloat16)
    expected = torch.tensor(0.3, dtype=torch.float32)
    for _ in range(100):
        policy.adaptive.update(BELOW)
        expected.add_(0.001)
    assert torch.equal(policy.adaptive.coefficient(), expected)
    assert policy.adaptive.coefficient().item() == pytest.approx(0.4, abs=100 * 2 ** -25)


def test_sac_gradient_keeps_float32_through_a_cast():
    policy = PolicyWithControllers()
    policy.sac.loss(BELOW).backward()
    policy.half()
    assert policy.sac.log_coeff.grad.dtype == torch.float32
    assert policy.sac.log_coeff.grad.item() == pytest.approx(0.1 - 5.0, rel=1e-6)


def test_device_moves_still_apply_to_the_state():
    policy = PolicyWithControllers().to("meta")
    assert policy.adaptive.coeff.device.type == policy.sac.log_coeff.device.type == "meta"
    assert policy.adaptive.coeff.dtype == torch.float32
    policy = PolicyWithControllers().to("meta", torch.bfloat16)
    assert policy.adaptive.coeff.device.type == "meta" and policy.adaptive.coeff.dtype == torch.float32


# --- a CUDA graph ---------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("mode", ["adaptive", "sac"])
def test_update_captured_in_a_cuda_graph_replays_like_eager_updates(mode):
    def make():
        return Controller(0.3, mode, initial_coeff=0.05, min_coeff=0.02, max_coeff=0.07, delta=0.004, device="cuda")

    eager, graphed = make(), make()
    static_entropy = torch.zeros((), device="cuda")

    # Warm up on a side stream, as torch.cuda.graph requires, then undo the warm-up's updates
    # (load_state_dict copies in place: the captured addresses stay valid).
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            graphed.update(static_entropy)
            graphed.coefficient()
    torch.cuda.current_stream().wait_stream(side)
    graphed.load_state_dict(eager.state_dict())
    state = graphed.coeff if mode == "adaptive" else graphed.log_coeff
    address = state.data_ptr()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.update(static_entropy)
        static_coefficient = graphed.coefficient()
    torch.cuda.synchronize()
    assert torch.equal(graphed.coefficient(), eager.coefficient())  # capturing ran nothing

    # adaptive: below, below, above, then below until max_coeff stops it; sac: update clamps
    # log_coeff, set out of bounds (both ways) before each step.
    entropies = [0.1, 0.1, 0.5, 0.1, 0.1, 0.1, 0.1, 0.5, 0.5]
    log_coeffs = [math.log(0.5), math.log(0.001), math.log(0.05), math.log(0.07), math.log(1e-6)] * 2
    for i, entropy in enumerate(entropies):
        if mode == "sac":
            with torch.no_grad():  # a fill on the device (no host-to-device copy)
                graphed.log_coeff.fill_(log_coeffs[i])
                eager.log_coeff.fill_(log_coeffs[i])
        static_entropy.fill_(entropy)
        graph.replay()
        eager.update(torch.full((), entropy, device="cuda"))
        assert torch.equal(static_coefficient, eager.coefficient()), i
        assert torch.equal(state, eager.coeff if mode == "adaptive" else eager.log_coeff), i
    assert state.data_ptr() == address
    if mode == "adaptive":
        # 0.05 +0.004 +0.004 -0.004 then up to the bound 0.07, then -0.004 twice.
        assert eager.coefficient().item() == pytest.approx(0.062, rel=1e-5)
