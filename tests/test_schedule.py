"""Tests of the entropy-coefficient schedules (eager and TorchScript)."""

import math

import pytest
import torch
from torch import nn

from hybrid_entropy_ext.schedule import ConstantEntropySchedule, LinearEntropySchedule

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
