"""Where a config's keys come from: YAML text or files, and the section within a document.

A document is the ``entropy_regularization`` section alone, ``{"entropy_regularization":
{...}}``, or a whole trainer config ``{"trainer": {"entropy_regularization": {...}}}`` (or
with the section beside ``trainer``; in both places it is an error).
YAML is read with ``yaml.safe_load`` only.
"""

import difflib
import errno
import os
from pathlib import Path
from typing import Any, Final, Iterable, Mapping, Sequence, Tuple, Union

import yaml

from .._validation import describe

__all__ = ["SECTION", "TRAINER", "extract_section", "check_known_keys", "read_yaml_source", "safe_load"]

#: The section's key, and the key of the trainer config that holds it.
SECTION: Final[str] = "entropy_regularization"
TRAINER: Final[str] = "trainer"


def _require_mapping(where: str, value: Any) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: expected a mapping of {SECTION} keys, got {describe(value)}")
    return value


def extract_section(document: Any) -> Mapping[Any, Any]:
    """Find the ``entropy_regularization`` section in a whole or partial config document."""
    document = _require_mapping("config document", document)
    if TRAINER in document:
        trainer = _require_mapping(TRAINER, document[TRAINER])
        if SECTION in trainer and SECTION in document:
            raise ValueError(
                f"config document: {SECTION} is both at the top level and under {TRAINER}; give it once"
            )
        if SECTION not in trainer and SECTION in document:
            return _require_mapping(SECTION, document[SECTION])
        # A trainer config without the section means regularization at its defaults.
        return _require_mapping(f"{TRAINER}.{SECTION}", trainer.get(SECTION, {}))
    if SECTION in document:
        # A section whose keys are all commented out reads as null: the defaults.
        section = document[SECTION]
        return {} if section is None else _require_mapping(SECTION, section)
    return document


def check_known_keys(keys: Iterable[Any], valid: Sequence[str]) -> None:
    """Raise unless every key is a string in ``valid``; an unknown key's error suggests the closest."""
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"{SECTION}: expected string keys, got key {describe(key)}")
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{SECTION}: unknown key {key!r}{hint} (expected one of: {', '.join(valid)})"
            )


def read_yaml_source(path_or_text: Union[str, "os.PathLike[str]"]) -> Tuple[str, str]:
    """Return ``(text, source name)`` for a path or for YAML text."""
    if isinstance(path_or_text, os.PathLike):
        path = Path(path_or_text)
        return path.read_text(encoding="utf-8"), str(path)
    if not isinstance(path_or_text, str):
        raise TypeError(
            f"path_or_text: expected a path (str or os.PathLike) or YAML text, "
            f"got {describe(path_or_text)}"
        )
    if "\n" not in path_or_text:
        if os.path.exists(path_or_text):
            return Path(path_or_text).read_text(encoding="utf-8"), path_or_text
        # Parsing a mistyped file name as YAML would give a confusing "not a mapping" error.
        if path_or_text.strip().lower().endswith((".yaml", ".yml")):
            raise FileNotFoundError(errno.ENOENT, "config file not found", path_or_text)
    return path_or_text, "<yaml text>"


def safe_load(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``; a YAML error or an unsafe tag is a ``ValueError`` naming ``source``."""
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as error:
        raise ValueError(
            f"{source}: unsafe YAML tags (such as !!python/object) are rejected; "
            f"the config is read with yaml.safe_load: {error}"
        ) from error
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: invalid YAML: {error}") from error
