"""Configuration of hybrid entropy regularization: the ``entropy_regularization`` YAML section.

The dataclass fields are exactly the YAML keys of docs/design.md. Every way of building a
config (direct construction, :meth:`~EntropyRegularizationConfig.from_dict`,
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
"""

import dataclasses
import difflib
import errno
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Final, Iterable, Mapping, Optional, Tuple, Union

import yaml

from .schedule import (
    ConstantEntropySchedule,
    LinearEntropySchedule,
    _check_coefficient,
    _check_episode_count,
    _describe,
)

__all__ = ["EntropyRegularizationConfig", "SAME_AS_DISCRETE"]

#: Default of ``continuous_min_entropy_threshold``: the key was absent, so the continuous
#: head uses ``min_entropy_threshold``. Distinct from ``None``, which disables the penalty.
SAME_AS_DISCRETE: Final[str] = "same_as_min_entropy_threshold"

_SECTION: Final[str] = "entropy_regularization"
_TRAINER: Final[str] = "trainer"
_VALIDATOR: Final[str] = "validator"

_PRESETS: Final[Mapping[str, Mapping[str, Any]]] = {
    # 1000+ episodes
    "long": {"entropy_coeff_start": 0.1, "entropy_coeff_end": 0.001, "entropy_decay_episodes": 500},
    # 200-500 episodes
    "short": {"entropy_coeff_start": 0.05, "entropy_coeff_end": 0.01, "entropy_decay_episodes": 200},
    # conservative
    "debug": {
        "entropy_coeff_start": 0.03,
        "entropy_coeff_end": 0.01,
        "entropy_decay_episodes": 100,
        "min_entropy_threshold": 0.05,
    },
    "aggressive": {
        "entropy_coeff_start": 0.2,
        "entropy_coeff_end": 0.001,
        "entropy_decay_episodes": 500,
        "discrete_entropy_weight": 1.5,
        "continuous_entropy_weight": 0.3,
    },
}


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
    if not isinstance(value, bool):
        raise TypeError(f"{key}: expected a bool (true or false), got {_describe(value)}")
    return value


def _validate_coefficient(key: str, value: Any) -> float:
    return _check_coefficient(key, _parse_numeric_string(value))


def _validate_episode_count(key: str, value: Any) -> int:
    value = _parse_numeric_string(value)
    # Integral floats (500.0, or "5e2" from YAML) are accepted; anything else is an error
    # rather than being rounded silently.
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise ValueError(
                f"{key}: expected an integer number of episodes >= 0, got non-integer {value!r}"
            )
        value = int(value)
    return _check_episode_count(key, value)


def _validate_threshold(key: str, value: Any) -> Optional[float]:
    return None if value is None else _validate_coefficient(key, value)


def _validate_continuous_threshold(key: str, value: Any) -> Union[float, None, str]:
    if isinstance(value, str) and value == SAME_AS_DISCRETE:
        return SAME_AS_DISCRETE
    return _validate_threshold(key, value)


def _field(default: Any, validator: Callable[[str, Any], Any]) -> Any:
    return field(default=default, metadata={_VALIDATOR: validator})


# --- document handling ------------------------------------------------------------------


def _require_mapping(where: str, value: Any) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: expected a mapping of {_SECTION} keys, got {_describe(value)}")
    return value


def _extract_section(document: Any) -> Mapping[Any, Any]:
    """Find the ``entropy_regularization`` section in a whole or partial config document."""
    document = _require_mapping("config document", document)
    if _TRAINER in document:
        trainer = _require_mapping(_TRAINER, document[_TRAINER])
        # A trainer config without the section means regularization at its defaults.
        return _require_mapping(f"{_TRAINER}.{_SECTION}", trainer.get(_SECTION, {}))
    if _SECTION in document:
        return _require_mapping(_SECTION, document[_SECTION])
    return document


def _field_names() -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(EntropyRegularizationConfig))


def _check_known_keys(keys: Iterable[Any]) -> None:
    valid = _field_names()
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"{_SECTION}: expected string keys, got key {_describe(key)}")
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{_SECTION}: unknown key {key!r}{hint} (expected one of: {', '.join(valid)})"
            )


def _read_yaml_source(path_or_text: Union[str, "os.PathLike[str]"]) -> Tuple[str, str]:
    """Return ``(text, source name)`` for a path or for YAML text."""
    if isinstance(path_or_text, os.PathLike):
        path = Path(path_or_text)
        return path.read_text(encoding="utf-8"), str(path)
    if not isinstance(path_or_text, str):
        raise TypeError(
            f"path_or_text: expected a path (str or os.PathLike) or YAML text, "
            f"got {_describe(path_or_text)}"
        )
    if "\n" not in path_or_text:
        if os.path.exists(path_or_text):
            return Path(path_or_text).read_text(encoding="utf-8"), path_or_text
        # Parsing a mistyped file name as YAML would give a confusing "not a mapping" error.
        if path_or_text.strip().lower().endswith((".yaml", ".yml")):
            raise FileNotFoundError(errno.ENOENT, "config file not found", path_or_text)
    return path_or_text, "<yaml text>"


def _safe_load(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as error:
        raise ValueError(
            f"{source}: unsafe YAML tags (such as !!python/object) are rejected; "
            f"the config is read with yaml.safe_load: {error}"
        ) from error
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: invalid YAML: {error}") from error


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

    Numbers must be finite and >= 0; numeric strings (YAML reads ``1e-3`` as one) are
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

    def __post_init__(self) -> None:
        # Validate every field before setting any (frozen: via object.__setattr__).
        normalized = {
            f.name: f.metadata[_VALIDATOR](f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
        }
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
        section = _extract_section(document)
        _check_known_keys(section)
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
        text, source = _read_yaml_source(path_or_text)
        return cls.from_dict(_safe_load(text, source))

    @classmethod
    def preset(cls, name: str) -> "EntropyRegularizationConfig":
        """A named preset: ``long``, ``short``, ``debug`` or ``aggressive``.

        Keys a preset does not set keep their defaults. docs/design.md has the table.
        """
        if not isinstance(name, str):
            raise TypeError(f"preset name: expected a str, got {_describe(name)}")
        if name not in _PRESETS:
            close = difflib.get_close_matches(name, list(_PRESETS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"preset name: unknown preset {name!r}{hint} "
                f"(expected one of: {', '.join(_PRESETS)})"
            )
        return cls(**_PRESETS[name])

    def to_dict(self) -> Dict[str, Any]:
        """The section as a plain dict, suitable for :meth:`from_dict`.

        ``continuous_min_entropy_threshold`` is left out while it follows
        ``min_entropy_threshold``, as in a YAML file where the key is absent.
        """
        result = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self._continuous_threshold_follows_discrete:
            del result["continuous_min_entropy_threshold"]
        return result

    def to_yaml(self) -> str:
        """The section as YAML text (keys in field order), suitable for :meth:`from_yaml`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def replace(self, **overrides: Any) -> "EntropyRegularizationConfig":
        """A validated copy with ``overrides`` applied; this config is unchanged."""
        _check_known_keys(overrides)
        return dataclasses.replace(self, **overrides)

    def make_schedule(self) -> Union[LinearEntropySchedule, ConstantEntropySchedule]:
        """The coefficient schedule this config describes (a scriptable ``nn.Module``)."""
        if self.enable_adaptive_entropy:
            return LinearEntropySchedule(
                self.entropy_coeff_start, self.entropy_coeff_end, self.entropy_decay_episodes
            )
        return ConstantEntropySchedule(self.entropy_coeff)
