"""The ``entropy_regularization`` argument every integration takes, read once.

:class:`~hybrid_entropy_ext.integrations.sb3.PPO` and its sb3-contrib siblings, and the
TorchRL losses, accept the same forms: an
:class:`~hybrid_entropy_ext.EntropyRegularizationConfig`, a dict of its YAML keys, a preset
name, or ``None``.
"""

from typing import Any, Mapping, Optional, Union

from .._validation import describe
from ..regularization import EntropyRegularizationConfig
from ..regularization.config import as_config

__all__ = ["EntropyRegularization", "entropy_regularization_config"]

#: What ``entropy_regularization`` accepts: a config, a mapping of its YAML keys, a preset
#: name, or ``None`` (no regularizer: the library's own entropy term).
EntropyRegularization = Union[None, str, EntropyRegularizationConfig, Mapping[str, Any]]


def entropy_regularization_config(value: EntropyRegularization) -> Optional[EntropyRegularizationConfig]:
    """The config an ``entropy_regularization`` argument names (``None`` for ``None``).

    Raises:
        TypeError: anything else than the four accepted forms.
        ValueError: an unknown preset name or a bad YAML value (naming the key).
    """
    if value is None:
        return None
    if isinstance(value, str):
        return EntropyRegularizationConfig.preset(value)
    if isinstance(value, (EntropyRegularizationConfig, Mapping)):
        return as_config(value, {})
    raise TypeError(
        "entropy_regularization: expected an EntropyRegularizationConfig, a dict of its YAML keys, a preset "
        f"name or None; got {describe(value)}"
    )
