"""The argument checks that the package's layers share.

Every public entry point (the op wrappers, the schedules, the controller, the config, the
regularizer, the monitor) reads numbers the same way through these functions: Python and
NumPy numbers alike, ``bool`` never as a number, a NumPy float narrower than float64 as
the decimal it prints as, and errors that name the argument, the expectation and the
value. Internal: the names here are for the package's modules, not its users.
"""

import math
import numbers
from typing import Any, List, Optional, Sequence, Tuple

from torch import SymFloat, SymInt, Tensor

__all__ = [
    "describe",
    "is_bool",
    "is_real",
    "real_to_float",
    "check_real",
    "check_coefficient",
    "check_positive_coefficient",
    "check_episode_count",
    "check_target",
    "check_coefficient_range",
    "check_points",
    "check_op_real",
    "check_op_flag",
    "check_op_integers",
    "check_op_tensors",
    "check_op_reals",
]


def describe(value: Any) -> str:
    """``value`` as an error message quotes it: its repr and its type's name."""
    return f"{value!r} ({type(value).__name__})"


def is_bool(value: Any) -> bool:
    """Whether ``value`` is a bool, Python's or NumPy's.

    ``numpy.bool_`` is not a subclass of bool (nor registered as a number); a flag where
    a number is expected is a mistake in either spelling.
    """
    return isinstance(value, bool) or (type(value).__name__ in ("bool_", "bool") and hasattr(value, "dtype"))


def real_to_float(value: numbers.Real) -> float:
    """``float(value)``, except that a NumPy float narrower than float64 is read as the
    shortest decimal that rounds to it: ``np.float32(0.01)`` -> ``0.01``, the number the
    NumPy-based config that produced it meant, not ``0.009999999776482582``."""
    itemsize = getattr(getattr(value, "dtype", None), "itemsize", 8)
    if isinstance(value, numbers.Integral) or itemsize >= 8:
        return float(value)
    return float(str(value))


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number: Python or NumPy, but not a bool (see :func:`is_bool`)."""
    return isinstance(value, numbers.Real) and not is_bool(value)


def check_real(name: str, value: Any, expected: str) -> float:
    """``value`` as a float if it is a real number (Python or NumPy, not bool), else TypeError."""
    if not is_real(value):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    return real_to_float(value)


def check_coefficient(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number >= 0.

    ``bool`` is rejected although it subclasses ``int``: ``True`` as a coefficient
    is almost certainly a misplaced flag, not the number 1. NumPy scalars are
    accepted like Python numbers.
    """
    expected = "a finite number >= 0"
    result = check_real(name, value, expected)
    if not (math.isfinite(result) and result >= 0.0):
        raise ValueError(f"{name}: expected {expected}, got {result!r}")
    return result


def check_positive_coefficient(name: str, value: Any, where: str) -> float:
    """:func:`check_coefficient`, and > 0: the start or end of a geometric decay, which never
    reaches 0. ``where`` says what needs it (``for an exponential schedule``, or the
    config's ``with entropy_schedule: exponential``)."""
    result = check_coefficient(name, value)
    if result <= 0.0:
        raise ValueError(
            f"{name}: expected a finite number > 0 {where} (a geometric decay never reaches 0), got {result!r}"
        )
    return result


def check_episode_count(name: str, value: Any) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= 0 (Python or NumPy)."""
    expected = "an integer number of episodes >= 0"
    if is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    if value < 0:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_target(value: Any, name: str = "target_entropy") -> float:
    """A target entropy: any finite number of nats (a differential entropy can be < 0)."""
    expected = "a finite number of nats"
    result = check_real(name, value, expected)
    if not math.isfinite(result):
        raise ValueError(f"{name}: expected {expected}, got {result!r}")
    return result


def check_coefficient_range(
    initial: float,
    low: float,
    high: float,
    mode: str,
    names: Tuple[str, str, str] = ("initial_coeff", "min_coeff", "max_coeff"),
    sac: str = "in sac mode",
) -> None:
    """The checks across a controller's already checked coefficients: ``low <= high``,
    ``low <= initial <= high``, and ``initial > 0`` when ``mode`` is ``"sac"``.

    ``names`` (initial, min, max) are what the messages call them and ``sac`` how they
    spell the mode, so that the config's messages name its YAML keys.
    """
    initial_name, low_name, high_name = names
    if low > high:
        raise ValueError(f"{low_name}: expected <= {high_name} ({high!r}), got {low!r}")
    if not low <= initial <= high:
        raise ValueError(
            f"{initial_name}: expected a number in [{low_name}, {high_name}] = [{low!r}, {high!r}], got {initial!r}"
        )
    if mode == "sac" and initial <= 0.0:
        raise ValueError(
            f"{initial_name}: expected a number > 0 {sac} (the controller learns its logarithm), got {initial!r}"
        )


def check_points(name: str, points: Any) -> Tuple[List[int], List[float]]:
    """A piecewise schedule's ``[[episode, value], ...]`` -> (episodes, values), validated:
    episodes integers >= 0 in strictly increasing order, values finite and >= 0. Errors
    name the pair, e.g. ``points[2][0] (episode)``."""
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence):
        raise TypeError(f"{name}: expected a list of [episode, value] pairs, got {describe(points)}")
    if len(points) == 0:
        raise ValueError(f"{name}: expected at least one [episode, value] pair, got an empty list")
    episodes: List[int] = []
    values: List[float] = []
    for i, point in enumerate(points):
        if isinstance(point, (str, bytes)) or not isinstance(point, Sequence) or len(point) != 2:
            raise TypeError(f"{name}[{i}]: expected an [episode, value] pair, got {describe(point)}")
        episode = check_episode_count(f"{name}[{i}][0] (episode)", point[0])
        value = check_coefficient(f"{name}[{i}][1] (value)", point[1])
        if episodes and episode <= episodes[-1]:
            raise ValueError(
                f"{name}[{i}][0] (episode): expected episodes in increasing order, "
                f"got {episode} after {episodes[-1]}"
            )
        episodes.append(episode)
        values.append(value)
    return episodes, values


# The op wrappers' arguments that the dispatcher would otherwise reject with a RuntimeError
# about its schema: each a TypeError naming the op and the argument (as check_real words
# it), and read as the schema takes it (NumPy numbers and tuples included).


# What a traced argument can be: torch.export (non-strict) passes a number derived from a
# shape as a symbol, which the checks take as it is (converting it would specialize it).
_SYMBOLIC_NUMBERS = (SymInt, SymFloat)


def check_op_real(op: str, name: str, value: Any, optional: bool = False) -> Optional[float]:
    """``value`` as a float (``None`` passes where ``optional``, a symbolic number as it
    is), else a TypeError."""
    if type(value) is float:  # the common case, first: these run on every op call
        return value
    if value is None and optional:
        return None
    if isinstance(value, _SYMBOLIC_NUMBERS):
        return value
    return check_real(f"{op}: {name}", value, "a number or None" if optional else "a number")


def check_op_tensors(op: str, names: Sequence[str], values: Sequence[Any], num_required: int = 0) -> None:
    """A TypeError naming the first of ``values`` (``names[i]``'s value) that is not a
    Tensor, where ``None`` passes for all but the first ``num_required``: a NumPy array or a
    list would otherwise fail on a missing attribute or on the dispatcher's schema. Quotes
    the type only: the value may be a large array."""
    for i, value in enumerate(values):
        # `is None` first: isinstance against Tensor goes through its metaclass's
        # __instancecheck__, slow for a non-tensor (these run on every op call).
        if value is None:
            if i < num_required:
                break
        elif not isinstance(value, Tensor):
            break
    else:
        return
    expected = "a Tensor" if i < num_required else "a Tensor or None"
    raise TypeError(f"{op}: {names[i]}: expected {expected}, got {type(value).__name__}")


def check_op_flag(op: str, name: str, value: Any) -> bool:
    """``value`` as a bool (Python's or NumPy's), else a TypeError."""
    if value is True or value is False:
        return value
    if not is_bool(value):
        raise TypeError(f"{op}: {name}: expected a bool, got {describe(value)}")
    return bool(value)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def check_op_integers(op: str, name: str, value: Any) -> Optional[List[int]]:
    """``value`` (None, or a list or tuple of integers) as a list of ints (a symbolic int
    as it is), else a TypeError."""
    if value is None:
        return None
    if not _is_sequence(value) or not all(
        isinstance(v, SymInt) or (isinstance(v, numbers.Integral) and not is_bool(v)) for v in value
    ):
        raise TypeError(f"{op}: {name}: expected a list of integers or None, got {describe(value)}")
    return [v if isinstance(v, SymInt) else int(v) for v in value]


def check_op_reals(op: str, name: str, value: Any) -> Optional[List[float]]:
    """``value`` (None, or a list or tuple of numbers) as a list of floats, else a TypeError."""
    if value is None:
        return None
    if not _is_sequence(value):
        raise TypeError(f"{op}: {name}: expected a list of numbers or None, got {describe(value)}")
    return [check_real(f"{op}: {name}[{i}]", v, "a number") for i, v in enumerate(value)]
