"""``EntropyMonitor``: the regularizer's outputs over a run, and when the collapse penalty acts.

    monitor = EntropyMonitor(regularizer, every=10, writer=SummaryWriter("runs/x"))
    for episode in ...:
        out = regularizer(logits, log_std, episode)
        monitor.record(out, episode)          # one host read of the values, or none
    monitor.to_csv("entropy.csv"); monitor.to_json("entropy.json"); monitor.plot_png("entropy.png")

A record reads the step's values (0-dim tensors, on any device), and the episode
when it is given as a 0-dim integer tensor (``regularizer.episode_counter``), gathered in
one tensor and read with one ``.tolist()``: at most one device sync per recorded step, and
none on the steps that ``every`` skips (those do not touch the tensors at all).
"""

import csv
import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._validation import check_episode_count, describe, is_bool
from .config import EntropyRegularizationConfig

__all__ = ["EntropyMonitor", "MONITORED_KEYS", "SUB_HEAD_ENTROPY_KEY"]

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
#: With discrete sub-heads, each sub-head h's batch entropy (``discrete_entropy_per_head[h]``)
#: is recorded as this key, after :data:`MONITORED_KEYS`.
SUB_HEAD_ENTROPY_KEY = "discrete_entropy_head_{}"
_HEADS = ("discrete", "continuous")
#: Per head, the recorded keys that belong to it.
_HEAD_KEYS = {head: (head, f"{head}_penalty", f"{head}_entropy", f"{head}_entropy_coeff") for head in _HEADS}
#: The keys that are all exactly 0, in every record, for a head the policy does not have
#: (the op's output for a missing head): the head's keys but its coefficient.
_PRESENCE_KEYS = {
    head: tuple(key for key in keys if key != f"{head}_entropy_coeff") for head, keys in _HEAD_KEYS.items()
}

# The logger's name is part of the interface (logging configurations select it by name).
_LOGGER = logging.getLogger("hybrid_entropy_ext.monitor")


def _check_heads(heads: Any) -> Optional[Tuple[str, ...]]:
    if heads is None:
        return None
    expected = "None or a list of the heads the policy has, out of 'discrete' and 'continuous'"
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Sequence):
        raise TypeError(f"heads: expected {expected}, got {describe(heads)}")
    for head in heads:
        if head not in _HEADS:
            raise ValueError(f"heads: expected {expected}, got {head!r} in {list(heads)!r}")
    if len(heads) == 0 or len(set(heads)) != len(heads):
        raise ValueError(f"heads: expected {expected} (at least one, each once), got {list(heads)!r}")
    return tuple(head for head in _HEADS if head in heads)


def _check_episode_tensor(episode: Tensor) -> Tensor:
    # Metadata only: the value is read with the step's values (or not at all on a skipped step).
    if episode.dim() != 0 or episode.dtype.is_floating_point or episode.dtype.is_complex or episode.dtype == torch.bool:
        raise TypeError(
            "episode: expected an integer >= 0 or a 0-dim integer tensor (e.g. regularizer.episode_counter), "
            f"got a tensor of shape {tuple(episode.shape)} and dtype {episode.dtype}"
        )
    return episode


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON's ``null``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _thresholds(source: Any) -> Dict[str, Optional[float]]:
    if source is None:
        return {"discrete": None, "continuous": None}
    config = getattr(source, "config", source)
    if not isinstance(config, EntropyRegularizationConfig):
        raise TypeError(
            "EntropyMonitor: config: expected an EntropyRegularizationConfig, a HybridEntropyRegularizer "
            f"or None, got {describe(source)}"
        )
    return {
        "discrete": config.min_entropy_threshold,
        "continuous": config.resolved_continuous_min_entropy_threshold,
    }


def _sub_head_thresholds(source: Any) -> Optional[Tuple[Optional[float], ...]]:
    """Each discrete sub-head's threshold (``None`` in each without one); ``None`` for a
    config without sub-heads, or no config."""
    config = getattr(source, "config", source)
    if not isinstance(config, EntropyRegularizationConfig) or config.discrete_sizes is None:
        return None
    if config.discrete_head_thresholds is not None:
        return tuple(config.discrete_head_thresholds)
    return (config.min_entropy_threshold,) * len(config.discrete_sizes)


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
        heads: the heads the policy has, e.g. ``["discrete"]`` for a purely discrete
            policy: the other head's keys are then neither read, nor recorded, nor
            written. ``None`` (the default): found from the records. The op reports a
            missing head as exactly 0 (entropy, term and penalty), so a head for which
            all three are exactly 0 in every record is absent. Either way an absent head
            is reported as absent (``summary()[head]["present"]`` is ``False``, its
            minimum and mean are ``None``), left out of the CSV and JSON files and of
            the plot, not shown as an entropy of 0 under the threshold. (Found from
            the records, it is known only afterwards: a ``writer`` gets its zeros.)

    Attributes:
        records: one dict per recorded step: ``episode`` and the recorded keys
            (:data:`MONITORED_KEYS` that the output held), as Python floats.

    Example::

        >>> import torch
        >>> from hybrid_entropy_ext import EntropyMonitor, EntropyRegularizationConfig, HybridEntropyRegularizer
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
        heads: Optional[Sequence[str]] = None,
    ) -> None:
        thresholds = _thresholds(config)
        sub_head_thresholds = _sub_head_thresholds(config)
        known_heads = _check_heads(heads)
        every = check_episode_count("every", every)
        if every < 1:
            raise ValueError(f"every: expected an integer >= 1, got {every}")
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(
                "writer: expected an object with add_scalar(tag, value, step) (e.g. a TensorBoard "
                f"SummaryWriter) or None, got {describe(writer)}"
            )
        if not isinstance(tag, str):
            raise TypeError(f"tag: expected a str, got {describe(tag)}")
        if not isinstance(warn, bool):
            raise TypeError(f"warn: expected a bool, got {describe(warn)}")
        self.thresholds = thresholds
        self._sub_head_thresholds = sub_head_thresholds
        self.every = every
        self.writer = writer
        self.tag = tag
        self.logger = logger if logger is not None else _LOGGER
        self.warn = warn
        self.heads = known_heads
        self._ignored = frozenset(
            key for head in _HEADS if known_heads is not None and head not in known_heads for key in _HEAD_KEYS[head]
        )
        self.records: List[Dict[str, float]] = []
        self.calls = 0
        self.interventions = {head: 0 for head in _HEADS}
        self.active_steps = {head: 0 for head in _HEADS}
        self._penalty_on = {head: False for head in _HEADS}
        self._entropy_min = {head: math.inf for head in _HEADS}
        self._entropy_sum = {head: 0.0 for head in _HEADS}
        self._entropy_count = {head: 0 for head in _HEADS}

    def record(
        self, out: Mapping[str, Union[Tensor, float]], episode: Union[None, int, Tensor] = None
    ) -> Optional[Dict[str, float]]:
        """Record one step's outputs (the regularizer's dict; 0-dim tensors or numbers).

        Args:
            out: ``forward``'s output, or any mapping holding some of
                :data:`MONITORED_KEYS` (other keys are ignored); with
                ``discrete_entropy_per_head`` (``[H]``, a multi-discrete policy's), each
                sub-head's entropy is recorded too, as ``discrete_entropy_head_<h>``.
            episode: the x value of this step (the trainer's episode, update or step
                count): an int >= 0, or a 0-dim integer tensor such as the
                regularizer's ``episode_counter`` (read in the same single host read as
                the values; not read at all on a skipped step). ``None``: the number of
                :meth:`record` calls before this one.

        Returns:
            The recorded row (``episode`` and the values as floats), or ``None`` on a
            step that ``every`` skips (its tensors are not read).

        Raises:
            TypeError, ValueError: a bad ``episode`` or value (named). A rejected call
            changes nothing: it is not counted, and nothing is recorded.
        """
        # Validate everything before changing any state.
        episode_tensor: Optional[Tensor] = None
        x: Optional[int] = None
        if isinstance(episode, Tensor):
            episode_tensor = _check_episode_tensor(episode)
        elif episode is not None:
            x = check_episode_count("episode", episode)
        step = self.calls
        if step % self.every != 0:
            self.calls += 1
            return None
        if episode is None:
            x = step
        keys = [key for key in MONITORED_KEYS if key in out and key not in self._ignored]
        # Numbers are converted here; a tensor's key keeps its place (a placeholder) and is
        # filled from the step's single read below.
        values: Dict[str, float] = {}
        tensor_keys: List[str] = []
        tensors: List[Tensor] = []
        for key in keys:
            value = out[key]
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    raise TypeError(
                        f"out[{key!r}]: expected a 0-dim tensor or a number, got a tensor of shape {tuple(value.shape)}"
                    )
                tensor_keys.append(key)
                tensors.append(value)
                values[key] = math.nan
            elif is_bool(value) or not isinstance(value, numbers.Real):
                raise TypeError(f"out[{key!r}]: expected a 0-dim tensor or a number, got {describe(value)}")
            else:
                values[key] = float(value)
        per_head = out.get("discrete_entropy_per_head")
        if isinstance(per_head, Tensor) and "discrete_entropy" not in self._ignored:
            for h in range(per_head.numel()):
                key = SUB_HEAD_ENTROPY_KEY.format(h)
                tensor_keys.append(key)
                tensors.append(per_head.reshape(-1)[h])
                values[key] = math.nan

        read = self._read(tensors, episode_tensor)
        if episode_tensor is not None:
            x = int(read.pop())
            if x < 0:
                raise ValueError(f"episode: expected an integer >= 0, got {x} (read from the episode tensor)")
        assert x is not None
        values.update(zip(tensor_keys, read))

        self.calls += 1
        row: Dict[str, float] = {"episode": x, **values}
        self.records.append(row)
        self._update_heads(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{self.tag}/{key}", value, x)
        return row

    @staticmethod
    def _read(tensors: List[Tensor], episode: Optional[Tensor]) -> List[float]:
        """The values of ``tensors`` (then ``episode``'s, if given and read here) as floats:
        one stack (the episode appended) and one ``.tolist()``, a single device-to-host read
        for the step."""
        host_episode: Optional[float] = None
        with torch.no_grad():
            values: Optional[Tensor] = None
            if tensors:
                # stack promotes to the widest dtype (float32 and float64: float64).
                values = torch.stack([t if t.dim() == 0 else t.reshape(()) for t in tensors])
            if episode is not None:
                device = episode.device if values is None else values.device
                if episode.device != device and episode.device.type == "cpu":
                    host_episode = float(int(episode))  # a CPU read: no device sync
                else:
                    # float64: counts up to 2^53 are exact (float32: 2^24), and the values widen
                    # exactly. Appended to the stack, not stacked with the values: a stack of
                    # mixed dtypes casts each value on its own.
                    counter = episode.to(device=device, dtype=torch.float64).reshape(1)
                    values = counter if values is None else torch.cat((values.to(torch.float64), counter))
            if values is not None and not values.dtype.is_floating_point:  # integer or bool values alone
                values = values.to(torch.float32)
            read: List[float] = [] if values is None else values.tolist()
        if host_episode is not None:
            read.append(host_episode)
        return read

    def _update_heads(self, row: Mapping[str, float]) -> None:
        for head in _HEADS:
            entropy = row.get(f"{head}_entropy")
            if entropy is not None:
                self._entropy_min[head] = min(self._entropy_min[head], entropy)
                self._entropy_sum[head] += entropy
                self._entropy_count[head] += 1
            penalty = row.get(f"{head}_penalty", 0.0)
            # A NaN penalty (a NaN entropy's) is reported, never taken for an off one.
            on = penalty > 0.0 or math.isnan(penalty)
            if on:
                self.active_steps[head] += 1
                if not self._penalty_on[head]:
                    self.interventions[head] += 1
                    if self.warn:
                        self._warn(head, entropy, penalty, row)
            self._penalty_on[head] = on

    def _warn(self, head: str, entropy: Optional[float], penalty: float, row: Mapping[str, float]) -> None:
        sub_heads: List[float] = []
        while SUB_HEAD_ENTROPY_KEY.format(len(sub_heads)) in row:
            sub_heads.append(row[SUB_HEAD_ENTROPY_KEY.format(len(sub_heads))])
        if head == "discrete" and sub_heads:
            # The penalty is per sub-head: name those below their thresholds, not the sum.
            thresholds = self._sub_head_thresholds
            parts = []
            if thresholds is not None and len(thresholds) == len(sub_heads):
                parts = [f"sub-head {h} entropy {value:.3f} < {tau:g}"
                         for h, (value, tau) in enumerate(zip(sub_heads, thresholds))
                         if tau is not None and value < tau]
            if not parts:  # no thresholds, or none below them (a NaN entropy's NaN penalty)
                parts = [f"sub-head {h} entropy {value:.3f}" for h, value in enumerate(sub_heads)]
            self.logger.warning(
                "discrete %s at episode %d: collapse penalty %.3f", ", ".join(parts), row["episode"], penalty
            )
            return
        threshold = self.thresholds[head]
        entropy_text = "?" if entropy is None else f"{entropy:.3f}"
        below = "" if threshold is None else f" < {threshold:g}"
        self.logger.warning(
            "%s entropy %s%s at episode %d: collapse penalty %.3f", head, entropy_text, below, row["episode"], penalty
        )

    def present_heads(self) -> Tuple[str, ...]:
        """The heads the policy has: ``heads`` if given, else those that some record shows
        (a nonzero entropy, term or penalty; before any record, both)."""
        if self.heads is not None:
            return self.heads
        if not self.records:
            return _HEADS
        return tuple(
            head
            for head in _HEADS
            if any(row.get(key, 0.0) != 0.0 for row in self.records for key in _PRESENCE_KEYS[head])
        )

    def summary(self) -> Dict[str, Any]:
        """Per head: ``present`` (see ``heads``), ``min_entropy``, ``mean_entropy`` (nats,
        over the recorded steps; ``None`` before any, and for an absent head),
        ``interventions``, ``active_steps``, ``threshold``; for the discrete head of a config
        with sub-heads, also ``sub_head_thresholds`` (one per sub-head, the penalty's, or
        ``None`` without thresholds); and ``records``, ``calls``, ``every``."""
        result: Dict[str, Any] = {"records": len(self.records), "calls": self.calls, "every": self.every}
        present = self.present_heads()
        for head in _HEADS:
            count = self._entropy_count[head] if head in present else 0
            result[head] = {
                "present": head in present,
                "min_entropy": self._entropy_min[head] if count else None,
                "mean_entropy": self._entropy_sum[head] / count if count else None,
                "interventions": self.interventions[head],
                "active_steps": self.active_steps[head],
                "threshold": self.thresholds[head],
            }
        thresholds = self._sub_head_thresholds
        if thresholds is not None:
            result["discrete"]["sub_head_thresholds"] = None if thresholds[0] is None else list(thresholds)
        return result

    def _absent_keys(self) -> frozenset:
        present = self.present_heads()
        return frozenset(key for head in _HEADS if head not in present for key in _HEAD_KEYS[head])

    def _rows(self) -> List[Dict[str, float]]:
        """The records without the keys of absent heads."""
        absent = self._absent_keys()
        if not absent:
            return self.records
        return [{key: value for key, value in row.items() if key not in absent} for row in self.records]

    def _columns(self, rows: List[Dict[str, float]]) -> List[str]:
        present = {key for row in rows for key in row}
        sub_heads = sum(1 for key in present if key.startswith(SUB_HEAD_ENTROPY_KEY.format("")))
        return (
            ["episode"]
            + [key for key in MONITORED_KEYS if key in present]
            + [SUB_HEAD_ENTROPY_KEY.format(h) for h in range(sub_heads)]
        )

    def to_csv(self, path: Union[str, "os.PathLike[str]"]) -> Path:
        """One row per recorded step: ``episode`` and the recorded keys (an absent head's
        left out), 9 significant digits (every float32 output exactly; :meth:`to_json`
        keeps full precision); NaN and infinities as ``nan``, ``inf``. Returns the path."""
        path = Path(path)
        rows = self._rows()
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns(rows), restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: f"{value:.9g}" if isinstance(value, float) else value for key, value in row.items()})
        return path

    def to_json(self, path: Union[str, "os.PathLike[str]"]) -> Path:
        """``{"summary": summary(), "records": records}`` as standard JSON (an absent head's
        keys left out of the records). A non-finite value (a NaN run, an infinite entropy)
        is written as ``null``: JSON has no NaN or Infinity. Returns the path."""
        path = Path(path)
        document = _json_safe({"summary": self.summary(), "records": self._rows()})
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
        rows = self._rows()  # an absent head is not drawn (not as an entropy of 0)
        x = [row["episode"] for row in rows]

        def series(key: str) -> Optional[List[float]]:
            if not any(key in row for row in rows):
                return None
            return [row.get(key, math.nan) for row in rows]

        fig = Figure(figsize=(12, 4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3, sharex=True)
        sub_head_keys = tuple(key for key in self._columns(rows) if key.startswith("discrete_entropy_head_"))
        panels = (
            (axes[0], "entropy coefficient", ("current_entropy_coeff", "discrete_entropy_coeff", "continuous_entropy_coeff")),
            (axes[1], "entropy (nats)", ("discrete_entropy", "continuous_entropy") + sub_head_keys),
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
