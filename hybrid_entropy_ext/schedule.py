"""Entropy-coefficient schedules.

A schedule maps a training episode (a count of episodes, starting at 0) to the
entropy coefficient ``c`` (dimensionless) that multiplies the policy entropy in
the loss. Both schedules are ``nn.Module`` s so that a regularizer can hold one
as a submodule and the whole thing can be compiled with ``torch.jit.script``.
"""

import math
import numbers
from typing import Any

import torch
from torch import nn

__all__ = ["LinearEntropySchedule", "ConstantEntropySchedule"]


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_coefficient(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number >= 0.

    ``bool`` is rejected although it subclasses ``int``: ``True`` as a coefficient
    is almost certainly a misplaced flag, not the number 1.
    """
    expected = "a finite number >= 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {expected}, got {_describe(value)}")
    result = float(value)
    if not (math.isfinite(result) and result >= 0.0):
        raise ValueError(f"{name}: expected {expected}, got {result!r}")
    return result


def _check_episode_count(name: str, value: Any) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= 0."""
    expected = "an integer number of episodes >= 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {expected}, got {_describe(value)}")
    if value < 0:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def _check_episode_type(episode: Any) -> None:
    # Eager-only: TorchScript already enforces the ``int`` annotation, while in
    # Python a float or bool episode would otherwise be silently accepted.
    if isinstance(episode, bool) or not isinstance(episode, numbers.Integral):
        raise TypeError(f"episode: expected an integer >= 0, got {_describe(episode)}")


def _check_episode(episode: int) -> None:
    # Compiled by TorchScript, hence string concatenation instead of an f-string.
    if episode < 0:
        raise ValueError("episode: expected an integer >= 0, got " + str(episode))


class LinearEntropySchedule(nn.Module):
    """Linear decay of the entropy coefficient from ``start`` to ``end``.

    For an episode ``e >= 0`` and ``N = decay_episodes``::

        coeff(e) = start * (1 - e/N) + end * (e/N)   if e < N
        coeff(e) = end                                otherwise (always, when N == 0)

    Args:
        start: coefficient at episode 0 (dimensionless, finite, >= 0).
        end: coefficient from episode ``decay_episodes`` on (dimensionless, finite, >= 0).
            ``end > start`` is allowed and gives a linear increase.
        decay_episodes: length of the ramp, in episodes (int >= 0).

    Raises:
        TypeError: an argument is not a number (``bool`` is not a number;
            ``decay_episodes`` must be an ``int``).
        ValueError: an argument is negative or not finite.

    Example::

        >>> schedule = LinearEntropySchedule(0.1, 0.001, 500)
        >>> schedule(0), schedule(500)
        (0.1, 0.001)
        >>> round(schedule(250), 6)
        0.0505
        >>> scripted = torch.jit.script(schedule)  # same values, usable from C++
    """

    start: float
    end: float
    decay_episodes: int

    def __init__(self, start: float, end: float, decay_episodes: int) -> None:
        super().__init__()
        # Validate everything before assigning anything, so a bad call leaves no
        # half-built module behind.
        start_value = _check_coefficient("start", start)
        end_value = _check_coefficient("end", end)
        decay_value = _check_episode_count("decay_episodes", decay_episodes)
        self.start = start_value
        self.end = end_value
        self.decay_episodes = decay_value

    def forward(self, episode: int) -> float:
        """Return the coefficient (dimensionless) for ``episode`` (an int >= 0).

        Raises:
            ValueError: ``episode`` is negative (in scripted code this surfaces as
                ``torch.jit.Error`` carrying the same message).
            TypeError: in eager mode, ``episode`` is not an integer.
        """
        if not torch.jit.is_scripting():
            _check_episode_type(episode)
        _check_episode(episode)
        if episode >= self.decay_episodes:
            return self.end
        fraction = episode / self.decay_episodes
        return self.start * (1.0 - fraction) + self.end * fraction

    def extra_repr(self) -> str:
        return f"start={self.start!r}, end={self.end!r}, decay_episodes={self.decay_episodes!r}"


class ConstantEntropySchedule(nn.Module):
    """An entropy coefficient that does not change with the episode.

    Used when adaptive scheduling is disabled; it has the same call signature as
    :class:`LinearEntropySchedule` so the two are interchangeable.

    Args:
        value: the coefficient (dimensionless, finite, >= 0).

    Example::

        >>> ConstantEntropySchedule(0.01)(1234)
        0.01
    """

    value: float

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = _check_coefficient("value", value)

    def forward(self, episode: int) -> float:
        """Return the constant coefficient; ``episode`` (int >= 0) is only validated."""
        if not torch.jit.is_scripting():
            _check_episode_type(episode)
        _check_episode(episode)
        return self.value

    def extra_repr(self) -> str:
        return f"value={self.value!r}"
