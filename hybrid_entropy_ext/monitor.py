"""``EntropyMonitor``: the regularizer's outputs over a run, and when the collapse penalty acts.

    monitor = EntropyMonitor(regularizer, every=10, writer=SummaryWriter("runs/x"))
    for episode in ...:
        out = regularizer(logits, log_std, episode)
        monitor.record(out, episode)          # one host read of the values, or none
    monitor.to_csv("entropy.csv"); monitor.to_json("entropy.json"); monitor.plot_png("entropy.png")

A record reads the step's values (0-dim tensors, on any device) with one ``stack``
and one ``.tolist()``: at most one device sync per recorded step, and none on the
steps that ``every`` skips (those do not touch the tensors at all).
"""

import csv
import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor

from .config import EntropyRegularizationConfig
from .schedule import _check_episode_count, _describe

__all__ = ["EntropyMonitor", "MONITORED_KEYS"]

#: The keys a record keeps, in this order, when the output holds them.
MONITORED_KEYS = (
    "total",
    "discrete",
    "continuous",
    "discrete_penalty",
    "continuous_penalty",
    "discrete_entropy",
    "continuous_entropy",
    "current_entropy_coeff",
    "discrete_entropy_coeff",
    "continuous_entropy_coeff",
)
_HEADS = ("discrete", "continuous")

_LOGGER = logging.getLogger("hybrid_entropy_ext.monitor")


def _thresholds(source: Any) -> Dict[str, Optional[float]]:
    if source is None:
        return {"discrete": None, "continuous": None}
    config = getattr(source, "config", source)
    if not isinstance(config, EntropyRegularizationConfig):
        raise TypeError(
            "EntropyMonitor: config: expected an EntropyRegularizationConfig, a HybridEntropyRegularizer "
            f"or None, got {_describe(source)}"
        )
    return {
        "discrete": config.min_entropy_threshold,
        "continuous": config.resolved_continuous_min_entropy_threshold,
    }


class EntropyMonitor:
    """Records a regularizer's outputs step by step and reports the collapse penalty's interventions.

    Per head (discrete, continuous) it keeps the minimum and mean entropy over the
    recorded steps, how many recorded steps had the penalty on (``active_steps``)
    and how many times it switched on (``interventions``: a step with the penalty
    on after one without, or the first recorded step). Each switch-on is logged
    as a warning through :mod:`logging` (logger ``hybrid_entropy_ext.monitor``), e.g.
    ``discrete entropy 0.053 < 0.1 at episode 100: collapse penalty 0.140``.

    Args:
        config: the :class:`EntropyRegularizationConfig` or
            :class:`HybridEntropyRegularizer` whose thresholds the warnings quote
            (``None``: the warnings give no threshold).
        every: record one step in ``every`` (an int >= 1): steps 0, every, 2 every, ...
            of the calls to :meth:`record`; the others return at once.
        writer: anything with ``add_scalar(tag, value, step)`` (a TensorBoard
            ``SummaryWriter``, for example): each record writes its values as
            ``{tag}/{key}`` at step ``episode``.
        tag: prefix of the writer's tags.
        logger: where the warnings go (default: ``logging.getLogger("hybrid_entropy_ext.monitor")``).
        warn: ``False``: count the switch-ons without logging them.

    Attributes:
        records: one dict per recorded step: ``episode`` and the recorded keys
            (:data:`MONITORED_KEYS` that the output held), as Python floats.

    Example::

        >>> reg = HybridEntropyRegularizer(EntropyRegularizationConfig.preset("long"))
        >>> monitor = EntropyMonitor(reg)
        >>> out = monitor.record(reg(torch.randn(8, 4), torch.zeros(2), 0), episode=0)
        >>> monitor.summary()["discrete"]["interventions"]
        0
    """

    def __init__(
        self,
        config: Any = None,
        every: int = 1,
        writer: Any = None,
        tag: str = "entropy",
        logger: Optional[logging.Logger] = None,
        warn: bool = True,
    ) -> None:
        thresholds = _thresholds(config)
        every = _check_episode_count("every", every)
        if every < 1:
            raise ValueError(f"every: expected an integer >= 1, got {every}")
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(
                "writer: expected an object with add_scalar(tag, value, step) (e.g. a TensorBoard "
                f"SummaryWriter) or None, got {_describe(writer)}"
            )
        if not isinstance(tag, str):
            raise TypeError(f"tag: expected a str, got {_describe(tag)}")
        if not isinstance(warn, bool):
            raise TypeError(f"warn: expected a bool, got {_describe(warn)}")
        self.thresholds = thresholds
        self.every = every
        self.writer = writer
        self.tag = tag
        self.logger = logger if logger is not None else _LOGGER
        self.warn = warn
        self.records: List[Dict[str, float]] = []
        self.calls = 0
        self.interventions = {head: 0 for head in _HEADS}
        self.active_steps = {head: 0 for head in _HEADS}
        self._penalty_on = {head: False for head in _HEADS}
        self._entropy_min = {head: math.inf for head in _HEADS}
        self._entropy_sum = {head: 0.0 for head in _HEADS}

    def record(
        self, out: Mapping[str, Union[Tensor, float]], episode: Optional[int] = None
    ) -> Optional[Dict[str, float]]:
        """Record one step's outputs (the regularizer's dict; 0-dim tensors or numbers).

        Args:
            out: ``forward``'s output, or any mapping holding some of
                :data:`MONITORED_KEYS` (other keys are ignored).
            episode: the x value of this step (the trainer's episode, update or step
                count; an int >= 0). ``None``: the number of :meth:`record` calls before
                this one.

        Returns:
            The recorded row (``episode`` and the values as floats), or ``None`` on a
            step that ``every`` skips (its tensors are not read).
        """
        step = self.calls
        self.calls += 1
        if step % self.every != 0:
            return None
        x = step if episode is None else _check_episode_count("episode", episode)
        keys = [key for key in MONITORED_KEYS if key in out]
        tensors = [out[key] for key in keys if isinstance(out[key], Tensor)]
        read: List[float] = []
        if tensors:
            dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
            # One stack and one .tolist(): a single device-to-host read for the whole step.
            read = torch.stack([t.detach().reshape(()).to(dtype) for t in tensors]).tolist()
        values: Dict[str, float] = {}
        position = 0
        for key in keys:
            value = out[key]
            if isinstance(value, Tensor):
                values[key] = read[position]
                position += 1
            elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                values[key] = float(value)
            else:
                raise TypeError(f"out[{key!r}]: expected a 0-dim tensor or a number, got {_describe(value)}")
        row: Dict[str, float] = {"episode": x, **values}
        self.records.append(row)
        self._update_heads(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{self.tag}/{key}", value, x)
        return row

    def _update_heads(self, row: Mapping[str, float]) -> None:
        for head in _HEADS:
            entropy = row.get(f"{head}_entropy")
            if entropy is not None:
                self._entropy_min[head] = min(self._entropy_min[head], entropy)
                self._entropy_sum[head] += entropy
            penalty = row.get(f"{head}_penalty", 0.0)
            on = penalty > 0.0
            if on:
                self.active_steps[head] += 1
                if not self._penalty_on[head]:
                    self.interventions[head] += 1
                    if self.warn:
                        self._warn(head, entropy, penalty, row["episode"])
            self._penalty_on[head] = on

    def _warn(self, head: str, entropy: Optional[float], penalty: float, episode: float) -> None:
        threshold = self.thresholds[head]
        entropy_text = "?" if entropy is None else f"{entropy:.3f}"
        below = "" if threshold is None else f" < {threshold:g}"
        self.logger.warning(
            "%s entropy %s%s at episode %d: collapse penalty %.3f", head, entropy_text, below, episode, penalty
        )

    def summary(self) -> Dict[str, Any]:
        """Per head: ``min_entropy``, ``mean_entropy`` (nats, over the recorded steps;
        ``None`` before any), ``interventions``, ``active_steps``; and ``records``, ``calls``."""
        result: Dict[str, Any] = {"records": len(self.records), "calls": self.calls, "every": self.every}
        for head in _HEADS:
            count = sum(1 for row in self.records if f"{head}_entropy" in row)
            result[head] = {
                "min_entropy": self._entropy_min[head] if count else None,
                "mean_entropy": self._entropy_sum[head] / count if count else None,
                "interventions": self.interventions[head],
                "active_steps": self.active_steps[head],
                "threshold": self.thresholds[head],
            }
        return result

    def _columns(self) -> List[str]:
        present = {key for row in self.records for key in row}
        return ["episode"] + [key for key in MONITORED_KEYS if key in present]

    def to_csv(self, path: Union[str, "os.PathLike[str]"]) -> Path:
        """One row per recorded step: ``episode`` and the recorded keys, 9 significant digits
        (every float32 output exactly; :meth:`to_json` keeps full precision). Returns the path."""
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns(), restval="")
            writer.writeheader()
            for row in self.records:
                writer.writerow({key: f"{value:.9g}" if isinstance(value, float) else value for key, value in row.items()})
        return path

    def to_json(self, path: Union[str, "os.PathLike[str]"]) -> Path:
        """``{"summary": summary(), "records": records}`` as JSON. Returns the path."""
        path = Path(path)
        document = {"summary": self.summary(), "records": self.records}
        path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return path

    def plot_png(self, path: Union[str, "os.PathLike[str]"], title: str = "") -> Path:
        """PNG of the coefficient(s), the entropies (with the thresholds) and the penalties
        against the episode. Needs matplotlib (``pip install ".[demo]"``). Returns the path."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                'EntropyMonitor.plot_png needs matplotlib: pip install ".[demo]" (or pip install matplotlib)'
            ) from error
        path = Path(path)
        x = [row["episode"] for row in self.records]

        def series(key: str) -> Optional[List[float]]:
            if not any(key in row for row in self.records):
                return None
            return [row.get(key, math.nan) for row in self.records]

        fig = Figure(figsize=(12, 4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3, sharex=True)
        panels = (
            (axes[0], "entropy coefficient", ("current_entropy_coeff", "discrete_entropy_coeff", "continuous_entropy_coeff")),
            (axes[1], "entropy (nats)", ("discrete_entropy", "continuous_entropy")),
            (axes[2], "collapse penalty", ("discrete_penalty", "continuous_penalty")),
        )
        for ax, ylabel, keys in panels:
            for key in keys:
                values = series(key)
                if values is not None:
                    ax.plot(x, values, label=key)
            ax.set_ylabel(ylabel)
            ax.set_xlabel("episode")
        for head, color in (("discrete", "tab:blue"), ("continuous", "tab:orange")):
            if self.thresholds[head] is not None and series(f"{head}_entropy") is not None:
                axes[1].axhline(self.thresholds[head], color=color, ls=":", lw=1, label=f"{head} threshold")
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
        if title:
            fig.suptitle(title)
        fig.savefig(path, dpi=100)
        return path
