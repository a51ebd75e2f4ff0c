"""Regularization: what turns the fused loss into a training-time regularizer.

- ``schedule.py``: the entropy-coefficient schedules (linear, constant, cosine,
  exponential, piecewise), scriptable modules.
- ``controller.py``: :class:`TargetEntropyController`, a coefficient that keeps one
  head's entropy near a target.
- ``config.py``: :class:`EntropyRegularizationConfig`, the ``entropy_regularization``
  YAML section (``config_document.py`` reads documents, ``presets.py`` names presets).
- ``regularizer.py``: :class:`HybridEntropyRegularizer`, the ``nn.Module`` of the above,
  built from parts: ``coefficient.py``, ``controlled_heads.py``, ``distributed.py``,
  ``finite_inputs.py``, ``checkpoint.py``.
- ``monitor.py``: :class:`EntropyMonitor`, the outputs over a run and the collapse
  penalty's interventions.

Built on the ops layer (:mod:`hybrid_entropy_ext.ops`); nothing here imports the
application (the CLI, the demo trainer, the benchmarks).
"""

from .config import EntropyRegularizationConfig
from .controller import TargetEntropyController
from .monitor import EntropyMonitor
from .regularizer import HybridEntropyRegularizer
from .schedule import (
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    LinearEntropySchedule,
    PiecewiseEntropySchedule,
)

__all__ = [
    "LinearEntropySchedule",
    "ConstantEntropySchedule",
    "CosineEntropySchedule",
    "ExponentialEntropySchedule",
    "PiecewiseEntropySchedule",
    "EntropyRegularizationConfig",
    "HybridEntropyRegularizer",
    "TargetEntropyController",
    "EntropyMonitor",
]
