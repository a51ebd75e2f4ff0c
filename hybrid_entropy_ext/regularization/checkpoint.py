"""Loading a regularizer saved at state-dict version 1: no episode counter, no controllers.

Version 2 (``HybridEntropyRegularizer._version``) added the ``episode_counter`` buffer,
the controller submodules and the ``distributed`` / ``process_group`` / ``check_finite``
attributes; the ``loss_agg_mode`` / ``loss_scale_factor`` attributes came later, outside
the state dict. What an older whole-module pickle lacks gets the value that switches it
off: no controllers, not distributed, no finiteness check, the plain batch mean, the
counter at 0.
"""

from typing import Any, Dict

import torch

__all__ = ["COUNTER", "fill_missing_state", "add_missing_counter"]

#: The name of the episode-counter buffer.
COUNTER = "episode_counter"

_ATTRIBUTE_DEFAULTS = {
    "distributed": False,
    "process_group": None,
    "check_finite": False,
    "loss_agg_mode": "token-mean",
    "loss_scale_factor": None,
    "discrete_sizes": None,
    "discrete_head_thresholds": None,
    "normalize_discrete_entropy": False,
    "parameterized_actions": False,
}


def fill_missing_state(module_dict: Dict[str, Any]) -> None:
    """Completes the ``__dict__`` of a regularizer unpickled from a version-1 whole-module
    pickle (``torch.save(model)``), after ``nn.Module.__setstate__``."""
    modules = module_dict["_modules"]
    for name in ("discrete_controller", "continuous_controller"):
        if name not in modules and name not in module_dict:
            module_dict[name] = None  # where nn.Module keeps a submodule attribute set to None
    buffers = module_dict["_buffers"]
    if COUNTER not in buffers:
        buffers[COUNTER] = torch.zeros((), dtype=torch.int64)
    for name, value in _ATTRIBUTE_DEFAULTS.items():
        if name not in module_dict:
            module_dict[name] = value


def add_missing_counter(state_dict: Dict[str, Any], prefix: str, local_metadata: Dict[str, Any]) -> None:
    """Adds a counter at 0 to a version-1 ``state_dict`` (its module was always given the
    episode), before ``nn.Module._load_from_state_dict`` reads it."""
    version = local_metadata.get("version", None)
    key = prefix + COUNTER
    if (version is None or version < 2) and key not in state_dict:
        state_dict[key] = torch.zeros((), dtype=torch.int64)
