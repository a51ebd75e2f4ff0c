"""Configuration of hybrid entropy regularization: the ``entropy_regularization`` YAML section.

The dataclass fields are exactly the YAML keys of the README's Configuration section. Every
way of building a config (direct construction, :meth:`~EntropyRegularizationConfig.from_dict`,
:meth:`~EntropyRegularizationConfig.from_yaml`, :meth:`~EntropyRegularizationConfig.preset`,
:meth:`~EntropyRegularizationConfig.replace`) goes through the same validation, and a
config is frozen, so an invalid config cannot exist and bad input changes nothing.

Example::

    >>> cfg = EntropyRegularizationConfig.from_yaml('''
    ... trainer:
    ...   entropy_regularization:
    ...     entropy_coeff_start: 0.2
    ...     entropy_decay_episodes: 1000
    ... ''')
    >>> cfg.entropy_coeff_start, cfg.entropy_coeff_end
    (0.2, 0.001)
    >>> cfg.make_schedule()
    LinearEntropySchedule(start=0.2, end=0.001, decay_episodes=1000)

The optional keys (``entropy_schedule``, ``entropy_schedule_points``, the
target-entropy control) default to a linear schedule and no control: a config with only
the core keys means the linear schedule with its penalties, and
:meth:`~EntropyRegularizationConfig.to_dict` leaves the optional keys out while they hold
their defaults, so such a config dumps with the core keys only.
"""

import dataclasses
import difflib
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Final, Mapping, Optional, Tuple, Union

import yaml

from .._validation import (
    check_coefficient,
    check_real,
    check_coefficient_range,
    check_episode_count,
    check_points,
    check_positive_coefficient,
    check_target,
    describe,
    is_bool,
    real_to_float,
)
from .config_document import check_known_keys, extract_section, read_yaml_source, safe_load
from ..ops.aggregation import LOSS_AGG_MODES
from .controller import TargetEntropyController
from .presets import PRESETS
from .schedule import (
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    LinearEntropySchedule,
    PiecewiseEntropySchedule,
)

__all__ = [
    "EntropyRegularizationConfig",
    "SAME_AS_DISCRETE",
    "SCHEDULES",
    "SCHEDULE_UNITS",
    "TARGET_ENTROPY_CONTROLS",
    "as_config",
]

#: Default of ``continuous_min_entropy_threshold``: the key was absent, so the continuous
#: head uses ``min_entropy_threshold``. Distinct from ``None``, which disables the penalty.
SAME_AS_DISCRETE: Final[str] = "same_as_min_entropy_threshold"

# Keys of the fields' metadata: the key's validator, and whether it is optional (left out
# of to_dict while at its default).
_VALIDATOR: Final[str] = "validator"
_OPTIONAL: Final[str] = "optional"

#: Values of ``entropy_schedule``: the shape of the coefficient's decay.
SCHEDULES: Final[Tuple[str, ...]] = ("linear", "cosine", "exponential", "piecewise")
#: Values of ``schedule_unit``: what a trainer counts as the schedule's position.
SCHEDULE_UNITS: Final[Tuple[str, ...]] = ("episodes", "updates", "timesteps")
#: Values of ``target_entropy_control``.
TARGET_ENTROPY_CONTROLS: Final[Tuple[str, ...]] = ("none", "sac", "adaptive")

# --- per-key validators: (key, raw value) -> normalized value, or raise -------------------


def _parse_numeric_string(value: Any) -> Any:
    # PyYAML follows YAML 1.1, which reads ``1e-3`` (no dot) as a string; quoted numbers
    # are strings too. Anything float() cannot parse is left for the type check to reject.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _validate_bool(key: str, value: Any) -> bool:
    if not is_bool(value):  # bool or numpy.bool_
        raise TypeError(f"{key}: expected a bool (true or false), got {describe(value)}")
    return bool(value)


def _validate_coefficient(key: str, value: Any) -> float:
    return check_coefficient(key, _parse_numeric_string(value))


def _parse_episode(key: str, value: Any) -> Any:
    """An episode number as written: a numeric string is parsed, and an integral float
    (500.0, np.float32(500), or "5e2" from YAML) becomes an int; a non-integral one is an
    error rather than being rounded silently. Anything else is left for the type check."""
    value = _parse_numeric_string(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not is_bool(value):
        value = real_to_float(value)
        if not (math.isfinite(value) and value.is_integer()):
            raise ValueError(f"{key}: expected an integer number of episodes >= 0, got non-integer {value!r}")
        value = int(value)
    return value


def _validate_episode_count(key: str, value: Any) -> int:
    return check_episode_count(key, _parse_episode(key, value))


def _validate_threshold(key: str, value: Any) -> Optional[float]:
    return None if value is None else _validate_coefficient(key, value)


def _validate_continuous_threshold(key: str, value: Any) -> Union[float, None, str]:
    if isinstance(value, str) and value == SAME_AS_DISCRETE:
        return SAME_AS_DISCRETE
    return _validate_threshold(key, value)


def _validate_choice(choices: Tuple[str, ...]) -> Callable[[str, Any], str]:
    def validate(key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{key}: expected one of {', '.join(choices)}, got {describe(value)}")
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{key}: expected one of {', '.join(choices)}, got {value!r}{hint}")
        return value

    return validate


def _validate_control(key: str, value: Any) -> str:
    # YAML's null reads as "no control", the same as the string none.
    return "none" if value is None else _validate_choice(TARGET_ENTROPY_CONTROLS)(key, value)


def _validate_points(key: str, value: Any) -> Optional[Tuple[Tuple[int, float], ...]]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        # Numeric strings (YAML 1.1 reads 1e-3 as one) and integral floats, as for the other keys.
        converted = []
        for i, point in enumerate(value):
            if isinstance(point, (list, tuple)) and len(point) == 2:
                point = (_parse_episode(f"{key}[{i}][0] (episode)", point[0]), _parse_numeric_string(point[1]))
            converted.append(point)
        value = converted
    episodes, values = check_points(key, value)
    # A tuple of tuples: the config is frozen and hashable.
    return tuple(zip(episodes, values))


def _validate_target(key: str, value: Any) -> Optional[float]:
    # A Gaussian's entropy is a differential entropy: a target below 0 nats is legitimate.
    return None if value is None else check_target(_parse_numeric_string(value), key)


def _validate_scale_factor(key: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    expected = "a finite number > 0, or null (the tokens per sequence)"
    result = check_real(key, _parse_numeric_string(value), expected)
    if not (math.isfinite(result) and result > 0.0):
        raise ValueError(f"{key}: expected {expected}, got {result!r}")
    return result


def _validate_sizes(key: str, value: Any) -> Optional[Tuple[int, ...]]:
    if value is None:
        return None
    expected = "a non-empty list of sub-head sizes, each an integer > 0 (SB3's MultiDiscrete nvec), or null"
    if not isinstance(value, (list, tuple)) or not value:
        raise (TypeError if not isinstance(value, (list, tuple)) else ValueError)(
            f"{key}: expected {expected}, got {describe(value)}"
        )
    sizes = []
    for i, size in enumerate(value):
        # Python or NumPy integers: a list(nvec) of SB3's MultiDiscrete holds np.int64.
        if is_bool(size) or not isinstance(size, numbers.Integral):
            raise TypeError(f"{key}[{i}]: expected an integer > 0, got {describe(size)}")
        if size <= 0:
            raise ValueError(f"{key}[{i}]: expected an integer > 0, got {size}")
        sizes.append(int(size))
    return tuple(sizes)


def _validate_head_thresholds(key: str, value: Any) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise (TypeError if not isinstance(value, (list, tuple)) else ValueError)(
            f"{key}: expected a non-empty list of thresholds in nats (one per discrete sub-head), or null, "
            f"got {describe(value)}"
        )
    return tuple(_validate_coefficient(f"{key}[{i}]", threshold) for i, threshold in enumerate(value))


def _field(default: Any, validator: Callable[[str, Any], Any], optional: bool = False) -> Any:
    return field(default=default, metadata={_VALIDATOR: validator, _OPTIONAL: optional})


def _optional_field(default: Any, validator: Callable[[str, Any], Any]) -> Any:
    """An optional key: ``to_dict`` leaves it out while it holds its default."""
    return _field(default, validator, optional=True)


# --- the config -------------------------------------------------------------------------


@dataclass(frozen=True)
class EntropyRegularizationConfig:
    """Settings of the hybrid entropy regularizer; the fields are the YAML keys.

    Coefficients and weights are dimensionless; thresholds are entropies in nats
    (batch means); ``entropy_decay_episodes`` counts episodes.

    Attributes:
        enable_adaptive_entropy: ``True``: the coefficient decays linearly from
            ``entropy_coeff_start`` to ``entropy_coeff_end``; ``False``: it stays at
            ``entropy_coeff``.
        entropy_coeff: fixed coefficient used when adaptive scheduling is off.
        entropy_coeff_start: coefficient at episode 0.
        entropy_coeff_end: coefficient from episode ``entropy_decay_episodes`` on.
        entropy_decay_episodes: length of the linear decay, in episodes.
        discrete_entropy_weight: weight of the categorical head's entropy.
        continuous_entropy_weight: weight of the Gaussian head's entropy.
        min_entropy_threshold: collapse-penalty threshold of the discrete head, in nats;
            ``None`` disables the penalty (and the continuous one, unless that is set).
        continuous_min_entropy_threshold: threshold of the continuous head, in nats;
            :data:`SAME_AS_DISCRETE` (the default, meaning the YAML key was absent) uses
            ``min_entropy_threshold``; ``None`` disables it. Read the effective value
            from :attr:`resolved_continuous_min_entropy_threshold`.
        penalty_multiplier: slope of the collapse penalty below the threshold.
        entropy_schedule: shape of the decay while ``enable_adaptive_entropy`` is true:
            ``linear`` (the default), ``cosine`` or ``exponential``
            (both from ``entropy_coeff_start`` to ``entropy_coeff_end`` over
            ``entropy_decay_episodes``; exponential needs both > 0, checked only while
            ``enable_adaptive_entropy`` is true: with it false the schedule is not used),
            or ``piecewise`` (through ``entropy_schedule_points``).
        entropy_schedule_points: ``[[episode, value], ...]`` for ``piecewise``, episodes
            increasing (RLlib's format); must be absent (null) for the other schedules.
        schedule_unit: what the trainers of this package (the demo PPO, the SB3
            integration) count as the schedule's position, its "episode":
            ``episodes`` (the default: finished episodes, across vectorized
            environments), ``updates`` (policy updates: one per rollout) or
            ``timesteps`` (environment steps, across vectorized environments). The
            regularizer itself reads the position it is given (or its counter).
        target_entropy_control: ``none`` (the default), ``sac`` or ``adaptive``: a
            :class:`~hybrid_entropy_ext.TargetEntropyController` for each head that has a
            target below; a controlled head takes its coefficient from the controller
            instead of the schedule.
        discrete_target_entropy: target of the categorical head's batch-mean entropy, in
            nats (>= 0), or null (that head follows the schedule).
        continuous_target_entropy: target of the Gaussian head's batch-mean entropy, in
            nats (any finite number: a differential entropy can be negative), or null.
        controller_initial_coeff: the controllers' starting coefficient (> 0 for ``sac``).
        controller_min_coeff, controller_max_coeff: bounds of the controlled coefficient.
        controller_delta: ``adaptive``: the coefficient's step per ``update`` call.
        controller_only_below_target: ``adaptive``: the entropy term of a controlled head
            is applied only while its entropy is below the target.
        loss_agg_mode: how the rows' entropies become ``H_d`` and ``H_c`` in every
            ``forward`` (weighted by its ``sample_mask`` where one is given):
            ``token-mean`` (the default: the batch mean), ``token-sum``,
            ``seq-mean-token-sum``, ``seq-mean-token-sum-norm`` or
            ``seq-mean-token-mean`` (the last three need inputs ``[B, T, ...]``), as
            verl 0.9.1's ``agg_loss`` (:func:`~hybrid_entropy_ext.hybrid_entropy_loss`
            defines them).
        loss_scale_factor: the divisor of ``seq-mean-token-sum-norm`` (> 0), or null:
            the tokens per sequence ``T``. Other modes do not read it.
        discrete_sizes: ``[K_1, ..., K_H]``: the logits are ``H`` categorical sub-heads
            (a multi-discrete policy, SB3's ``MultiDiscrete`` ``nvec``), ``H_d`` the sum
            of their entropies and the collapse penalty one per sub-head; or null (one
            categorical). :func:`~hybrid_entropy_ext.hybrid_entropy_loss` defines it.
        discrete_head_thresholds: one threshold (nats, >= 0) per sub-head in place of
            ``min_entropy_threshold``, or null (every sub-head gets that one).
        normalize_discrete_entropy: ``true``: each row's (sub-)head entropy is divided by
            the log of its number of allowed actions, so that the discrete entropies
            and their thresholds are fractions of the maximum, in [0, 1].
        parameterized_actions: ``true``: each discrete action has its own continuous
            parameters (``log_std`` ``[..., K, P]`` or ``[K, P]``) and ``H_c`` is the
            expected entropy of the chosen action's parameters
            (:func:`~hybrid_entropy_ext.hybrid_entropy_loss` defines it). Not with
            ``discrete_sizes``.

    Numbers must be finite and >= 0 (except ``continuous_target_entropy``); numeric strings (YAML reads ``1e-3`` as one) are
    converted; ``bool`` is not accepted as a number. Invalid values raise ``TypeError``
    (wrong type) or ``ValueError`` naming the key, the expectation and the value.

    Example::

        >>> cfg = EntropyRegularizationConfig.preset("short").replace(penalty_multiplier=5.0)
        >>> schedule = cfg.make_schedule()
        >>> schedule(0), round(schedule(100), 6), schedule(200)
        (0.05, 0.03, 0.01)
    """

    enable_adaptive_entropy: bool = _field(True, _validate_bool)
    entropy_coeff: float = _field(0.01, _validate_coefficient)
    entropy_coeff_start: float = _field(0.1, _validate_coefficient)
    entropy_coeff_end: float = _field(0.001, _validate_coefficient)
    entropy_decay_episodes: int = _field(500, _validate_episode_count)
    discrete_entropy_weight: float = _field(1.0, _validate_coefficient)
    continuous_entropy_weight: float = _field(0.5, _validate_coefficient)
    min_entropy_threshold: Optional[float] = _field(0.1, _validate_threshold)
    continuous_min_entropy_threshold: Union[float, None, str] = _field(
        SAME_AS_DISCRETE, _validate_continuous_threshold
    )
    penalty_multiplier: float = _field(3.0, _validate_coefficient)
    # --- optional: schedule shapes and target-entropy control --------------------------
    entropy_schedule: str = _optional_field("linear", _validate_choice(SCHEDULES))
    entropy_schedule_points: Optional[Tuple[Tuple[int, float], ...]] = _optional_field(None, _validate_points)
    schedule_unit: str = _optional_field("episodes", _validate_choice(SCHEDULE_UNITS))
    target_entropy_control: str = _optional_field("none", _validate_control)
    discrete_target_entropy: Optional[float] = _optional_field(None, _validate_threshold)
    continuous_target_entropy: Optional[float] = _optional_field(None, _validate_target)
    controller_initial_coeff: float = _optional_field(0.01, _validate_coefficient)
    controller_min_coeff: float = _optional_field(0.0, _validate_coefficient)
    controller_max_coeff: float = _optional_field(1.0, _validate_coefficient)
    controller_delta: float = _optional_field(0.001, _validate_coefficient)
    controller_only_below_target: bool = _optional_field(True, _validate_bool)
    # --- optional: aggregation of the rows ---------------------------------------------
    loss_agg_mode: str = _optional_field("token-mean", _validate_choice(LOSS_AGG_MODES))
    loss_scale_factor: Optional[float] = _optional_field(None, _validate_scale_factor)
    # --- optional: the discrete head's sub-heads ----------------------------------------
    discrete_sizes: Optional[Tuple[int, ...]] = _optional_field(None, _validate_sizes)
    discrete_head_thresholds: Optional[Tuple[float, ...]] = _optional_field(None, _validate_head_thresholds)
    normalize_discrete_entropy: bool = _optional_field(False, _validate_bool)
    parameterized_actions: bool = _optional_field(False, _validate_bool)

    def __post_init__(self) -> None:
        # Validate every field before setting any (frozen: via object.__setattr__).
        normalized = {
            f.name: f.metadata[_VALIDATOR](f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
        }
        _check_combination(normalized)
        for name, value in normalized.items():
            object.__setattr__(self, name, value)

    @property
    def resolved_continuous_min_entropy_threshold(self) -> Optional[float]:
        """Effective continuous threshold in nats (``None``: penalty disabled)."""
        if self._continuous_threshold_follows_discrete:
            return self.min_entropy_threshold
        return self.continuous_min_entropy_threshold  # type: ignore[return-value]

    @property
    def _continuous_threshold_follows_discrete(self) -> bool:
        return isinstance(self.continuous_min_entropy_threshold, str)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> "EntropyRegularizationConfig":
        """Build a config from a mapping.

        Accepts the section alone (``{"entropy_coeff": ...}``), ``{"entropy_regularization":
        {...}}`` or a whole trainer config ``{"trainer": {"entropy_regularization": {...}}}``
        (other keys of a whole config are ignored; a trainer without the section gives the
        defaults). Missing keys take their defaults.

        Raises:
            TypeError: the document or section is not a mapping, or a value has the wrong type.
            ValueError: an unknown key (the closest valid key is suggested) or a bad value.
        """
        section = extract_section(document)
        check_known_keys(section, _field_names())
        return cls(**section)

    @classmethod
    def from_yaml(cls, path_or_text: Union[str, "os.PathLike[str]"]) -> "EntropyRegularizationConfig":
        """Build a config from a YAML file or YAML text (read with ``yaml.safe_load``).

        A ``pathlib.Path`` is always a file. A ``str`` is a file if it names an existing
        one, otherwise YAML text; a one-line ``str`` ending in ``.yaml``/``.yml`` that
        does not exist raises ``FileNotFoundError``. The document layout is as in
        :meth:`from_dict`.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: invalid YAML, or a tag the safe loader rejects (``!!python/...``).
            TypeError, ValueError: as :meth:`from_dict`.
        """
        text, source = read_yaml_source(path_or_text)
        return cls.from_dict(safe_load(text, source))

    @classmethod
    def preset(cls, name: str) -> "EntropyRegularizationConfig":
        """A named preset: ``long``, ``short``, ``debug``, ``aggressive`` or ``plain``.

        Keys a preset does not set keep their defaults (the README's Configuration
        section has the table). ``plain`` is the usual fixed
        bonus exactly: a constant coefficient of 0.01, weights 1 and 1, no collapse
        penalties, so that ``total = -0.01 * (H_d + H_c)``, Stable-Baselines3's
        ``ent_coef * -entropy.mean()`` with the joint policy's entropy.
        """
        if not isinstance(name, str):
            raise TypeError(f"preset name: expected a str, got {describe(name)}")
        if name not in PRESETS:
            close = difflib.get_close_matches(name, list(PRESETS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"preset name: unknown preset {name!r}{hint} "
                f"(expected one of: {', '.join(PRESETS)})"
            )
        return cls(**PRESETS[name])

    def to_dict(self) -> Dict[str, Any]:
        """The section as a plain dict, suitable for :meth:`from_dict`.

        ``continuous_min_entropy_threshold`` is left out while it follows
        ``min_entropy_threshold``, as in a YAML file where the key is absent. The
        optional keys (``entropy_schedule`` and after) are left out while they hold their
        defaults, so a config that uses only the core keys gives a dict (and YAML) of the
        core keys alone. ``entropy_schedule_points`` comes back as lists.
        """
        result = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self._continuous_threshold_follows_discrete:
            del result["continuous_min_entropy_threshold"]
        for f in dataclasses.fields(self):
            if f.metadata[_OPTIONAL] and result[f.name] == f.default:
                del result[f.name]
        if result.get("entropy_schedule_points") is not None:
            result["entropy_schedule_points"] = [list(point) for point in result["entropy_schedule_points"]]
        for key in ("discrete_sizes", "discrete_head_thresholds"):
            if result.get(key) is not None:
                result[key] = list(result[key])
        return result

    def to_yaml(self) -> str:
        """The section as YAML text (keys in field order), suitable for :meth:`from_yaml`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def replace(self, **overrides: Any) -> "EntropyRegularizationConfig":
        """A validated copy with ``overrides`` applied; this config is unchanged."""
        check_known_keys(overrides, _field_names())
        return dataclasses.replace(self, **overrides)

    def make_schedule(
        self,
    ) -> Union[
        LinearEntropySchedule,
        ConstantEntropySchedule,
        CosineEntropySchedule,
        ExponentialEntropySchedule,
        PiecewiseEntropySchedule,
    ]:
        """The coefficient schedule this config describes (a scriptable ``nn.Module``).

        ``enable_adaptive_entropy: false`` gives a constant ``entropy_coeff`` whatever
        ``entropy_schedule`` says; otherwise ``entropy_schedule`` picks the shape.
        """
        if not self.enable_adaptive_entropy:
            return ConstantEntropySchedule(self.entropy_coeff)
        if self.entropy_schedule == "piecewise":
            return PiecewiseEntropySchedule(self.entropy_schedule_points)
        shape = {
            "linear": LinearEntropySchedule,
            "cosine": CosineEntropySchedule,
            "exponential": ExponentialEntropySchedule,
        }[self.entropy_schedule]
        return shape(self.entropy_coeff_start, self.entropy_coeff_end, self.entropy_decay_episodes)

    def make_controllers(self) -> Tuple[Optional[TargetEntropyController], Optional[TargetEntropyController]]:
        """``(discrete, continuous)`` target-entropy controllers, ``None`` for a head without one.

        With ``target_entropy_control: none`` both are ``None``; otherwise each head whose
        target is set gets a :class:`~hybrid_entropy_ext.TargetEntropyController` with the
        ``controller_*`` settings.
        """
        if self.target_entropy_control == "none":
            return None, None

        def make(target: Optional[float]) -> Optional[TargetEntropyController]:
            if target is None:
                return None
            return TargetEntropyController(
                target,
                self.target_entropy_control,
                self.controller_initial_coeff,
                self.controller_min_coeff,
                self.controller_max_coeff,
                self.controller_delta,
                self.controller_only_below_target,
            )

        return make(self.discrete_target_entropy), make(self.continuous_target_entropy)


def _field_names() -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(EntropyRegularizationConfig))


def _check_combination(values: Mapping[str, Any]) -> None:
    """Checks across keys, on already validated values; errors name every key involved."""
    sizes, head_thresholds = values["discrete_sizes"], values["discrete_head_thresholds"]
    if values["parameterized_actions"] and sizes is not None:
        raise ValueError(
            "parameterized_actions: gives the actions of one categorical head their parameters; "
            "discrete_sizes (sub-heads) cannot be combined with it"
        )
    if head_thresholds is not None and sizes is None:
        raise ValueError(
            "discrete_head_thresholds: the thresholds of the sub-heads of discrete_sizes, which is null "
            "(one head's threshold is min_entropy_threshold)"
        )
    if head_thresholds is not None and len(head_thresholds) != len(sizes):
        raise ValueError(
            f"discrete_head_thresholds: expected one threshold per discrete sub-head ({len(sizes)}, from "
            f"discrete_sizes), got {len(head_thresholds)}"
        )
    schedule, points = values["entropy_schedule"], values["entropy_schedule_points"]
    if schedule == "piecewise" and points is None:
        raise ValueError(
            "entropy_schedule_points: expected [[episode, value], ...] with entropy_schedule: piecewise, got null"
        )
    if schedule != "piecewise" and points is not None:
        raise ValueError(
            f"entropy_schedule_points: only used with entropy_schedule: piecewise, but entropy_schedule is "
            f"{schedule!r}; remove the points or set entropy_schedule: piecewise"
        )
    if schedule == "exponential" and values["enable_adaptive_entropy"]:
        # Only when the schedule is used: enable_adaptive_entropy: false gives a constant
        # coefficient, and the start and end of an unused decay are nobody's concern.
        for key in ("entropy_coeff_start", "entropy_coeff_end"):
            check_positive_coefficient(key, values[key], "with entropy_schedule: exponential")
    control = values["target_entropy_control"]
    targets = ("discrete_target_entropy", "continuous_target_entropy")
    if control == "none":
        for key in targets:
            if values[key] is not None:
                raise ValueError(
                    f"{key}: a target needs target_entropy_control: sac or adaptive, but target_entropy_control "
                    f"is 'none' (got {key}: {values[key]!r})"
                )
    elif all(values[key] is None for key in targets):
        raise ValueError(
            f"target_entropy_control: {control!r} needs discrete_target_entropy and/or "
            "continuous_target_entropy (nats), got neither"
        )
    # The controller's own checks, its messages naming the YAML keys.
    check_coefficient_range(
        values["controller_initial_coeff"],
        values["controller_min_coeff"],
        values["controller_max_coeff"],
        control,
        names=("controller_initial_coeff", "controller_min_coeff", "controller_max_coeff"),
        sac="with target_entropy_control: sac",
    )


def as_config(
    config: Union[None, EntropyRegularizationConfig, Mapping[str, Any]], overrides: Mapping[str, Any]
) -> EntropyRegularizationConfig:
    """What ``HybridEntropyRegularizer(config, **overrides)`` reads: ``config`` (``None``: the
    defaults; a mapping: read by :meth:`~EntropyRegularizationConfig.from_dict`) with
    ``overrides`` replacing its values."""
    if config is None:
        resolved = EntropyRegularizationConfig()
    elif isinstance(config, EntropyRegularizationConfig):
        resolved = config
    elif isinstance(config, Mapping):
        resolved = EntropyRegularizationConfig.from_dict(config)
    else:
        raise TypeError(
            "HybridEntropyRegularizer: config must be an EntropyRegularizationConfig, a mapping "
            f"of its YAML keys, or None; got {type(config).__name__}"
        )
    return resolved.replace(**overrides) if overrides else resolved
