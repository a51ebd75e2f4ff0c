"""Tests of the entropy-coefficient schedules (eager and TorchScript)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from common_utils import needs_cuda
from hybrid_entropy_ext.regularization.schedule import (
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    LinearEntropySchedule,
    PiecewiseEntropySchedule,
)

# TorchScript support is part of the contract, so its deprecation notice is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

START, END, N = 0.1, 0.001, 500

# Hand-computed from coeff(e) = start*(1 - e/N) + end*(e/N) for e < N, else end.
LINEAR_EXPECTED = [
    (0, 0.1),
    (1, 0.1 - 0.099 / 500),  # 0.099802
    (250, 0.0505),
    (499, 0.001 + 0.099 / 500),  # 0.001198
    (500, 0.001),
    (5000, 0.001),
]


class ScheduleHolder(nn.Module):
    """A parent module that calls its schedule submodule, as the regularizer does."""

    def __init__(self, schedule: nn.Module) -> None:
        super().__init__()
        self.schedule = schedule

    def forward(self, episode: int) -> float:
        return self.schedule(episode)


@pytest.mark.parametrize("episode, expected", LINEAR_EXPECTED)
def test_linear_schedule_follows_formula(episode, expected):
    assert LinearEntropySchedule(START, END, N)(episode) == pytest.approx(expected, rel=1e-12)


def test_linear_schedule_is_exact_at_endpoints():
    schedule = LinearEntropySchedule(START, END, N)
    assert schedule(0) == START
    assert schedule(N) == END


def test_linear_schedule_can_increase():
    assert LinearEntropySchedule(0.0, 1.0, 4)(1) == pytest.approx(0.25, rel=1e-12)


@pytest.mark.parametrize("episode", [0, 1, 1000])
def test_linear_schedule_with_zero_decay_is_end(episode):
    assert LinearEntropySchedule(START, END, 0)(episode) == END


def test_linear_schedule_accepts_integer_arguments():
    schedule = LinearEntropySchedule(1, 0, 2)
    assert isinstance(schedule.start, float) and isinstance(schedule.end, float)
    assert schedule(1) == pytest.approx(0.5, rel=1e-12)


def test_linear_schedule_negative_episode_raises():
    with pytest.raises(ValueError, match="episode"):
        LinearEntropySchedule(START, END, N)(-1)


@pytest.mark.parametrize("episode", [1.5, 2.0, True])
def test_linear_schedule_non_integer_episode_raises(episode):
    with pytest.raises(TypeError, match="episode"):
        LinearEntropySchedule(START, END, N)(episode)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"start": -0.1}, ValueError, "start"),
        ({"start": math.nan}, ValueError, "start"),
        ({"end": math.inf}, ValueError, "end"),
        ({"start": True}, TypeError, "start"),
        ({"end": "0.1"}, TypeError, "end"),
        ({"end": None}, TypeError, "end"),
        ({"decay_episodes": -1}, ValueError, "decay_episodes"),
        ({"decay_episodes": 500.0}, TypeError, "decay_episodes"),
        ({"decay_episodes": False}, TypeError, "decay_episodes"),
    ],
)
def test_linear_schedule_rejects_bad_argument(kwargs, error, name):
    arguments = {"start": START, "end": END, "decay_episodes": N, **kwargs}
    with pytest.raises(error, match=name):
        LinearEntropySchedule(**arguments)


def test_linear_schedule_error_names_given_value():
    with pytest.raises(ValueError, match=r"start: expected a finite number >= 0, got -0\.5"):
        LinearEntropySchedule(-0.5, END, N)


def test_linear_schedule_repr_shows_parameters():
    assert repr(LinearEntropySchedule(START, END, N)) == (
        "LinearEntropySchedule(start=0.1, end=0.001, decay_episodes=500)"
    )


def test_scripted_linear_schedule_matches_eager():
    eager = LinearEntropySchedule(START, END, N)
    scripted = torch.jit.script(eager)
    for episode in [0, 1, 250, 333, 499, 500, 5000]:
        assert scripted(episode) == eager(episode)


def test_scripted_linear_schedule_with_zero_decay_is_end():
    assert torch.jit.script(LinearEntropySchedule(START, END, 0))(0) == END


def test_scripted_linear_schedule_negative_episode_raises():
    scripted = torch.jit.script(LinearEntropySchedule(START, END, N))
    with pytest.raises(torch.jit.Error, match="episode"):
        scripted(-1)


def test_scripted_parent_calls_linear_schedule():
    eager = ScheduleHolder(LinearEntropySchedule(START, END, N))
    scripted = torch.jit.script(eager)
    assert [scripted(e) for e in (0, 250, 600)] == [eager(e) for e in (0, 250, 600)]


def test_constant_schedule_returns_value():
    schedule = ConstantEntropySchedule(0.01)
    assert [schedule(e) for e in (0, 1, 10_000)] == [0.01, 0.01, 0.01]


def test_constant_schedule_negative_episode_raises():
    with pytest.raises(ValueError, match="episode"):
        ConstantEntropySchedule(0.01)(-3)


@pytest.mark.parametrize(
    "value, error", [(-0.01, ValueError), (math.inf, ValueError), (False, TypeError), ("x", TypeError)]
)
def test_constant_schedule_rejects_bad_value(value, error):
    with pytest.raises(error, match="value"):
        ConstantEntropySchedule(value)


def test_constant_schedule_repr_shows_value():
    assert repr(ConstantEntropySchedule(0.01)) == "ConstantEntropySchedule(value=0.01)"


def test_scripted_constant_schedule_matches_eager():
    scripted = torch.jit.script(ConstantEntropySchedule(0.25))
    assert scripted(0) == 0.25 and scripted(10**6) == 0.25


def test_scripted_constant_schedule_negative_episode_raises():
    with pytest.raises(torch.jit.Error, match="episode"):
        torch.jit.script(ConstantEntropySchedule(0.25))(-1)


def test_scripted_parent_calls_constant_schedule():
    assert torch.jit.script(ScheduleHolder(ConstantEntropySchedule(0.02)))(7) == 0.02


def test_scripted_schedule_survives_save_and_load(tmp_path):
    path = tmp_path / "schedule.pt"
    torch.jit.save(torch.jit.script(LinearEntropySchedule(START, END, N)), str(path))
    assert torch.jit.load(str(path))(250) == LinearEntropySchedule(START, END, N)(250)


# --------------------------------------------------------------------------------------
# Cosine, exponential and piecewise schedules; the tensor form; NumPy scalars
# --------------------------------------------------------------------------------------

# end + (start - end) * 0.5 * (1 + cos(pi e / N)) with start 0.1, end 0.001, N 500, by hand:
# e = 125: cos(pi/4) = 0.70710678; 0.001 + 0.099 * 0.5 * 1.70710678 = 0.0855017857
# e = 250: cos(pi/2) = 0 -> 0.001 + 0.0495 = 0.0505; e = 375: cos(3pi/4) -> 0.0154982143
COSINE_EXPECTED = [(0, 0.1), (125, 0.0855017857), (250, 0.0505), (375, 0.0154982143), (500, 0.001), (900, 0.001)]

# start * (end / start) ** (e / N) with start 0.1, end 0.001, N 500: a factor 10 every 250 episodes.
EXPONENTIAL_EXPECTED = [(0, 0.1), (125, 0.1 / math.sqrt(10)), (250, 0.01), (375, 0.001 * math.sqrt(10)),
                        (500, 0.001), (900, 0.001)]

POINTS = [[10, 0.2], [110, 0.1], [310, 0.0]]
# Before the first point its value, after the last point its value, linear in between.
PIECEWISE_EXPECTED = [(0, 0.2), (10, 0.2), (35, 0.175), (110, 0.1), (160, 0.075), (309, 0.0005), (310, 0.0),
                      (5000, 0.0)]


@pytest.mark.parametrize("episode, expected", COSINE_EXPECTED)
def test_cosine_schedule_follows_formula(episode, expected):
    assert CosineEntropySchedule(START, END, N)(episode) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("episode, expected", EXPONENTIAL_EXPECTED)
def test_exponential_schedule_follows_formula(episode, expected):
    assert ExponentialEntropySchedule(START, END, N)(episode) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("episode, expected", PIECEWISE_EXPECTED)
def test_piecewise_schedule_interpolates_between_points(episode, expected):
    assert PiecewiseEntropySchedule(POINTS)(episode) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_piecewise_schedule_with_one_point_is_constant():
    schedule = PiecewiseEntropySchedule([[50, 0.3]])
    assert [schedule(e) for e in (0, 50, 10_000)] == [0.3, 0.3, 0.3]


def test_piecewise_schedule_through_two_points_is_the_linear_schedule():
    piecewise = PiecewiseEntropySchedule([[0, START], [N, END]])
    linear = LinearEntropySchedule(START, END, N)
    assert [piecewise(e) for e in range(0, 700, 7)] == [linear(e) for e in range(0, 700, 7)]


@pytest.mark.parametrize("shape", [CosineEntropySchedule, ExponentialEntropySchedule])
def test_decay_schedules_with_zero_decay_are_end(shape):
    assert shape(START, END, 0)(0) == END


@pytest.mark.parametrize("shape", [CosineEntropySchedule, ExponentialEntropySchedule])
def test_decay_schedules_are_exact_at_endpoints(shape):
    schedule = shape(START, END, N)
    assert (schedule(0), schedule(N)) == (START, END)


@pytest.mark.parametrize("value", [0.0, -0.0])
@pytest.mark.parametrize("name", ["start", "end"])
def test_exponential_schedule_rejects_zero_start_or_end(name, value):
    arguments = {"start": START, "end": END, "decay_episodes": N, name: value}
    with pytest.raises(ValueError, match=rf"{name}: expected a finite number > 0 .*got {value!r}"):
        ExponentialEntropySchedule(**arguments)


@pytest.mark.parametrize("shape", [CosineEntropySchedule, ExponentialEntropySchedule])
@pytest.mark.parametrize(
    "kwargs, error, name",
    [({"start": math.nan}, ValueError, "start"), ({"end": True}, TypeError, "end"),
     ({"decay_episodes": 2.5}, TypeError, "decay_episodes"), ({"decay_episodes": -1}, ValueError, "decay_episodes")],
)
def test_decay_schedules_reject_bad_argument(shape, kwargs, error, name):
    with pytest.raises(error, match=name):
        shape(**{"start": START, "end": END, "decay_episodes": N, **kwargs})


@pytest.mark.parametrize(
    "points, error, message",
    [
        ([], ValueError, r"points: expected at least one \[episode, value\] pair"),
        ("0 0.1", TypeError, r"points: expected a list of \[episode, value\] pairs, got '0 0.1'"),
        ([[0, 0.1], [5]], TypeError, r"points\[1\]: expected an \[episode, value\] pair, got \[5\]"),
        ([[0, 0.1], [10, -0.2]], ValueError, r"points\[1\]\[1\] \(value\): expected a finite number >= 0, got -0.2"),
        ([[0.5, 0.1]], TypeError, r"points\[0\]\[0\] \(episode\): expected an integer number of episodes"),
        ([[-1, 0.1]], ValueError, r"points\[0\]\[0\] \(episode\): expected .* >= 0, got -1"),
        ([[10, 0.1], [10, 0.2]], ValueError, r"points\[1\]\[0\] \(episode\): expected episodes in increasing "
                                             r"order, got 10 after 10"),
        ([[10, 0.1], [True, 0.2]], TypeError, r"points\[1\]\[0\] \(episode\)"),
    ],
)
def test_piecewise_schedule_rejects_bad_points(points, error, message):
    with pytest.raises(error, match=message):
        PiecewiseEntropySchedule(points)


def test_piecewise_schedule_repr_shows_points():
    assert repr(PiecewiseEntropySchedule([(0, 0.1), (5, 0)])) == "PiecewiseEntropySchedule(points=[[0, 0.1], [5, 0.0]])"


ALL_SCHEDULES = {
    "linear": lambda: LinearEntropySchedule(START, END, N),
    "linear_zero_decay": lambda: LinearEntropySchedule(START, END, 0),
    "constant": lambda: ConstantEntropySchedule(0.02),
    "cosine": lambda: CosineEntropySchedule(START, END, N),
    "exponential": lambda: ExponentialEntropySchedule(START, END, N),
    "piecewise": lambda: PiecewiseEntropySchedule(POINTS),
}
EPISODES = [0, 1, 10, 35, 125, 250, 309, 310, 499, 500, 501, 10_000]


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_tensor_form_gives_the_float_form_as_a_0_dim_float64_tensor(name):
    schedule = ALL_SCHEDULES[name]()
    for episode in EPISODES:
        got = schedule.coefficient_tensor(torch.tensor(episode))
        assert got.dim() == 0 and got.dtype == torch.float64 and got.device.type == "cpu"
        # Same double arithmetic; cos and pow may differ from libm's in the last bit.
        assert got.item() == pytest.approx(schedule(episode), rel=4e-16, abs=0.0), episode


@pytest.mark.parametrize("name", ["linear", "linear_zero_decay", "constant", "piecewise"])
def test_tensor_form_of_arithmetic_schedules_is_bitwise_the_float_form(name):
    schedule = ALL_SCHEDULES[name]()
    assert [schedule.coefficient_tensor(torch.tensor(e)).item() for e in EPISODES] == [schedule(e) for e in EPISODES]


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_scripted_schedule_matches_eager_in_both_forms(name):
    eager = ALL_SCHEDULES[name]()
    scripted = torch.jit.script(eager)
    assert [scripted(e) for e in EPISODES] == [eager(e) for e in EPISODES]
    assert [scripted.coefficient_tensor(torch.tensor(e)).item() for e in EPISODES] == [
        eager.coefficient_tensor(torch.tensor(e)).item() for e in EPISODES
    ]


@pytest.mark.parametrize("name", ["cosine", "exponential", "piecewise"])
def test_scripted_parent_calls_new_schedules(name):
    eager = ScheduleHolder(ALL_SCHEDULES[name]())
    scripted = torch.jit.script(eager)
    assert [scripted(e) for e in (0, 250, 600)] == [eager(e) for e in (0, 250, 600)]


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_every_schedule_rejects_a_negative_episode(name):
    with pytest.raises(ValueError, match="episode"):
        ALL_SCHEDULES[name]()(-1)


def test_numpy_float32_coefficients_read_as_the_decimal_they_print_as():
    schedule = LinearEntropySchedule(np.float32(0.1), np.float32(0.001), np.int64(500))
    assert (schedule.start, schedule.end, schedule.decay_episodes) == (0.1, 0.001, 500)
    assert type(schedule.start) is float and type(schedule.decay_episodes) is int


def test_numpy_float64_coefficient_is_taken_as_is():
    assert ConstantEntropySchedule(np.float64(0.1) / 3).value == 0.1 / 3


def test_numpy_integer_episode_gives_the_python_float():
    schedule = LinearEntropySchedule(START, END, N)
    got = schedule(np.int64(250))
    assert type(got) is float and got == schedule(250)


def test_numpy_points_are_accepted():
    assert PiecewiseEntropySchedule([(np.int32(0), np.float32(0.2)), (np.int64(4), np.float16(0.0))]).points == [
        [0, 0.2], [4, 0.0]]


@pytest.mark.parametrize("value", [np.bool_(True), True])
def test_bool_is_rejected_in_either_spelling(value):
    with pytest.raises(TypeError, match=r"start: expected a finite number >= 0, got"):
        LinearEntropySchedule(value, END, N)
    with pytest.raises(TypeError, match="episode"):
        LinearEntropySchedule(START, END, N)(value)


def test_numpy_float_episode_is_rejected():
    with pytest.raises(TypeError, match=r"episode: expected an integer >= 0, got np.float64\(3.0\)"):
        LinearEntropySchedule(START, END, N)(np.float64(3.0))


@needs_cuda
@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_tensor_form_on_cuda_makes_no_host_sync(name):
    schedule = ALL_SCHEDULES[name]()
    episode = torch.tensor(137, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = schedule.coefficient_tensor(episode)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert got.device.type == "cuda" and got.dtype == torch.float64
    assert got.item() == pytest.approx(schedule(137), rel=4e-16, abs=0.0)
