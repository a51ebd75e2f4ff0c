"""Side-by-side timing of the fused op against what a user could use instead.

Every implementation computes the same seven loss components. Timings are
taken in one process, in interleaved rounds (each round times every
implementation once, so drift on a shared machine hits all of them alike), and
reported as medians over rounds; speed-ups are ratios of those medians.

Implementations:

- ``fused``: :func:`hybrid_entropy_ext.hybrid_entropy_loss`.
- ``distributions``: the eager code a user writes with ``torch.distributions``
  (``Categorical(logits).entropy()``, ``Normal(0, exp(log_std)).entropy()``).
- ``reference``: the project's pure-PyTorch reference, eager.
- ``reference_compiled``: the reference under ``torch.compile``.
- ``read_pass`` / ``read_write_pass``: memory-roofline proxies, one read of the
  logits (``logits.sum()``) and one read plus one write
  (``out.copy_(logits)`` into a preallocated buffer). No entropy op can beat
  their sum by much: the forward reads the logits once and the backward reads
  them once more and writes the gradient once.
- ``sum_backward``, ``both_heads_sum_backward``, ``cross_entropy_backward``
  (forward+backward only): the floor at small sizes, where the autograd round
  trip costs more than the arithmetic: ``logits.sum()``,
  ``logits.sum() + log_std.sum()`` and ``F.cross_entropy(logits, targets)``,
  each with its backward.

Thread scaling (:func:`run_thread_scaling`) alternates the thread counts
within every round in the same way, for one implementation at one size.
"""

import contextlib
import functools
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Sequence

import torch
from torch import Tensor
from torch.distributions import Categorical, Normal

from ..ops import reference
from ..ops.loss import hybrid_entropy_loss

__all__ = [
    "Case",
    "device_timer",
    "Timing",
    "DEFAULT_CASES",
    "QUICK_CASES",
    "IMPLEMENTATIONS",
    "run_benchmark",
    "format_table",
    "format_floor_comparison",
    "write_json",
    "plot_speedups",
]

MODES = ("forward", "forward_backward")


@dataclass(frozen=True)
class Case:
    """One problem size: logits ``[batch, actions]``, log_std ``[batch, dims]`` (or ``[dims]``), of ``dtype``."""

    batch: int
    actions: int
    dims: int = 8
    shared_log_std: bool = False
    threads: Optional[int] = None  # None: leave torch's thread count as it is
    dtype: torch.dtype = torch.float32

    @property
    def label(self) -> str:
        label = f"{self.batch}x{self.actions}"
        if self.dtype != torch.float32:
            label += " " + str(self.dtype).replace("torch.", "")
        if self.shared_log_std:
            label += " [D]"
        if self.threads is not None:
            label += f" {self.threads}t"
        return label

    def make_inputs(self, device: str = "cpu") -> Dict[str, Tensor]:
        # Drawn in float32 on the device (a generator there), then rounded to dtype.
        generator = torch.Generator(device=device).manual_seed(self.batch * 1000 + self.actions)
        logits = torch.randn(self.batch, self.actions, generator=generator, device=device).to(self.dtype)
        log_std_shape = (self.dims,) if self.shared_log_std else (self.batch, self.dims)
        log_std = (0.1 * torch.randn(log_std_shape, generator=generator, device=device)).to(self.dtype)
        return {"logits": logits.requires_grad_(), "log_std": log_std.requires_grad_()}

    def fused_bytes(self, mode: str) -> int:
        """Bytes the fused op cannot avoid moving: forward, one read of the logits and log_std
        and the row statistics written; backward, the logits and row statistics read again
        and the logits' gradient written."""
        element = torch.finfo(self.dtype).bits // 8
        logits = self.batch * self.actions * element
        log_std = (1 if self.shared_log_std else self.batch) * self.dims * element
        row_stats = 3 * self.batch * (8 if self.dtype == torch.float64 else 4)
        forward = logits + log_std + row_stats
        return forward if mode == "forward" else forward + 2 * logits + row_stats


# The suite's sizes: common small-K hybrid action spaces up to
# large batches and a long-row case, plus a shared [D] log_std and 1 vs 2 threads.
DEFAULT_CASES = (
    Case(256, 4),
    Case(256, 16),
    Case(4096, 4),
    Case(4096, 16),
    Case(4096, 64),
    Case(65536, 4),
    Case(65536, 16),
    Case(65536, 64),
    Case(16384, 256),
    Case(262144, 16),
    Case(65536, 16, shared_log_std=True),
    Case(65536, 64, threads=1),
    Case(65536, 64, threads=2),
)

# Four sizes from small to large, quick enough for the main job.
QUICK_CASES = (Case(256, 8), Case(4096, 16), Case(65536, 16), Case(16384, 256))


def distributions_loss(logits: Tensor, log_std: Tensor, entropy_coeff: float) -> Dict[str, Tensor]:
    """The same seven components with the entropies computed the way a user
    would, with ``torch.distributions`` (default hyper-parameters)."""
    h_d = Categorical(logits=logits).entropy().mean()
    h_c = Normal(torch.zeros_like(log_std), log_std.exp()).entropy().sum(-1)
    h_c = h_c.mean() if log_std.dim() == 2 else h_c
    return reference.loss_from_entropies(h_d, h_c, entropy_coeff)


_compiled_reference: Optional[Callable[..., Dict[str, Tensor]]] = None


def _reference_compiled(logits: Tensor, log_std: Tensor, coeff: float) -> Dict[str, Tensor]:
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(reference.hybrid_entropy_loss, dynamic=False, fullgraph=True)
    return _compiled_reference(logits, log_std, coeff)


def fresh_compiled_reference() -> None:
    """Forgets every compiled graph, so that the next case compiles its own.

    Each case (shape, and grad mode per mode) is one more specialized graph;
    past Dynamo's recompile limit (8) it would otherwise run the reference
    eagerly without a word and the "compiled" column would time eager code.
    """
    import torch._dynamo  # imported on use: a slow import that only the compiled reference needs

    global _compiled_reference
    _compiled_reference = None
    torch._dynamo.reset()


LossFn = Callable[[Tensor, Tensor, float], Dict[str, Tensor]]

IMPLEMENTATIONS: Dict[str, LossFn] = {
    "fused": hybrid_entropy_loss,
    "distributions": distributions_loss,
    "reference": reference.hybrid_entropy_loss,
    "reference_compiled": _reference_compiled,
}
ROOFLINE = ("read_pass", "read_write_pass")
# The cheapest possible autograd round trip on the same logits, the floor
# under any op's forward+backward at small sizes.
SUM_BACKWARD = "sum_backward"
# Two more reference points for that floor: the cheapest round trip that
# reaches both heads (a loss of logits and log_std has two leaves to return
# gradients to), and PyTorch's own fused loss on the same logits.
BOTH_HEADS_SUM_BACKWARD = "both_heads_sum_backward"
CROSS_ENTROPY_BACKWARD = "cross_entropy_backward"
FLOOR = (SUM_BACKWARD, BOTH_HEADS_SUM_BACKWARD, CROSS_ENTROPY_BACKWARD)


def loss_step(fn: LossFn, inputs: Dict[str, Tensor], mode: str) -> Callable[[], object]:
    logits, log_std = inputs["logits"], inputs["log_std"]
    if mode == "forward":

        def forward() -> object:
            with torch.no_grad():
                return fn(logits, log_std, 0.01)

        return forward

    def forward_backward() -> object:
        # autograd.grad returns fresh gradients: no accumulation into .grad.
        return torch.autograd.grad(fn(logits, log_std, 0.01)["total"], (logits, log_std))

    return forward_backward


def _roofline_step(name: str, inputs: Dict[str, Tensor]) -> Callable[[], object]:
    logits = inputs["logits"].detach()
    if name == "read_pass":
        return logits.sum
    out = torch.empty_like(logits)
    return lambda: out.copy_(logits)


def _floor_steps(inputs: Dict[str, Tensor]) -> Dict[str, Callable[[], object]]:
    logits, log_std = inputs["logits"], inputs["log_std"]
    targets = torch.arange(logits.shape[0]) % logits.shape[1]
    return {
        SUM_BACKWARD: lambda: torch.autograd.grad(logits.sum(), (logits,)),
        BOTH_HEADS_SUM_BACKWARD: lambda: torch.autograd.grad(logits.sum() + log_std.sum(), (logits, log_std)),
        CROSS_ENTROPY_BACKWARD: lambda: torch.autograd.grad(
            torch.nn.functional.cross_entropy(logits, targets), (logits,)
        ),
    }


# seconds per call of `repeats` calls of a step, as a timer measures them
Timer = Callable[[Callable[[], object], int], float]


def wall_clock_seconds(step: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def device_timer(device: str) -> Timer:
    """How a suite times its calls on ``device``: by the wall clock on the CPU, between CUDA
    events on CUDA (:func:`cuda.cuda_event_seconds`)."""
    if device == "cuda":
        from .cuda import cuda_event_seconds

        return cuda_event_seconds
    return wall_clock_seconds


def _calls_per_sample(step: Callable[[], object], min_seconds: float, timer: Timer) -> int:
    return max(1, math.ceil(min_seconds / max(timer(step, 1), 1e-7)))


@dataclass
class Timing:
    """Median seconds per call of one implementation at one case and mode
    (``None`` with ``error`` set where the implementation failed at that size)."""

    case: str
    mode: str
    implementation: str
    median_s: Optional[float]
    rounds: int
    samples_s: List[float] = field(default_factory=list, repr=False)
    error: str = ""


def run_benchmark(
    cases: Iterable[Case] = QUICK_CASES,
    implementations: Sequence[str] = ("fused", "reference"),
    modes: Sequence[str] = MODES,
    rounds: int = 7,
    min_seconds_per_sample: float = 0.02,
    include_roofline: bool = False,
    progress: Optional[Callable[[str], None]] = None,
) -> List[Timing]:
    """Times each implementation at each case and mode; returns the medians.

    Args:
        cases: problem sizes.
        implementations: names from :data:`IMPLEMENTATIONS`.
        modes: ``"forward"`` (under ``no_grad``) and/or ``"forward_backward"``
            (forward, then gradients of ``total`` w.r.t. logits and log_std).
        rounds: interleaved rounds; the median over rounds is reported.
        min_seconds_per_sample: each sample repeats the call this long and
            divides, so that timer resolution does not matter.
        include_roofline: also time the read and read+write passes.
        progress: called with a short description before each case.
    """
    unknown = [name for name in implementations if name not in IMPLEMENTATIONS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; choose from {sorted(IMPLEMENTATIONS)}")
    results: List[Timing] = []
    previous_threads = torch.get_num_threads()
    try:
        for case in cases:
            if progress is not None:
                progress(case.label)
            if case.threads is not None:
                torch.set_num_threads(case.threads)
            inputs = case.make_inputs()
            if "reference_compiled" in implementations:
                fresh_compiled_reference()
            for mode in modes:
                steps = {name: loss_step(IMPLEMENTATIONS[name], inputs, mode) for name in implementations}
                if include_roofline:
                    steps.update({name: _roofline_step(name, inputs) for name in ROOFLINE})
                    if mode == "forward_backward":
                        steps.update(_floor_steps(inputs))
                with recompile_limit_raises(enabled="reference_compiled" in implementations):
                    results.extend(time_interleaved(case.label, mode, steps, rounds, min_seconds_per_sample))
            torch.set_num_threads(previous_threads)
    finally:
        torch.set_num_threads(previous_threads)
    return results


def recompile_limit_raises(enabled: bool) -> ContextManager[object]:
    """Makes a recompile limit hit raise instead of timing eager code as "compiled"."""
    if not enabled:
        return contextlib.nullcontext()
    import torch._dynamo

    return torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)


def time_interleaved(
    label: str,
    mode: str,
    steps: Dict[str, Callable[[], object]],
    rounds: int,
    min_seconds: float,
    setup: Optional[Dict[str, Callable[[], None]]] = None,
    timer: Timer = wall_clock_seconds,
    failures: Sequence[type] = (),
) -> List[Timing]:
    """Times the steps round by round; ``setup[name]``, if given, runs untimed
    before each of that step's warm-up, calibration and samples. A step whose
    warm-up raises one of ``failures`` (e.g. out of memory) is reported as failed
    and left out of the rounds."""
    setup = setup or {}

    def prepare(name: str) -> None:
        if name in setup:
            setup[name]()

    repeats: Dict[str, int] = {}
    failed: List[Timing] = []
    for name, step in steps.items():  # warm-up: compilation, allocator, page faults
        prepare(name)
        try:
            step()
            step()
            repeats[name] = _calls_per_sample(step, min_seconds, timer)
        except tuple(failures) as error:
            failed.append(Timing(label, mode, name, None, rounds, error=describe_error(error)))
    samples: Dict[str, List[float]] = {name: [] for name in repeats}
    for _ in range(rounds):
        for name in repeats:
            prepare(name)
            samples[name].append(timer(steps[name], repeats[name]))
    timed = [Timing(label, mode, name, statistics.median(times), rounds, times) for name, times in samples.items()]
    return timed + failed


def time_cases(
    cases: Sequence[Any],
    steps_of: Callable[[Any], Dict[str, Callable[[], object]]],
    mode: str,
    rounds: int,
    min_seconds: float,
    timer: Timer = wall_clock_seconds,
) -> List[Timing]:
    """:func:`time_interleaved` of each case's steps (``steps_of(case)``, labelled
    ``case.label``), the cases one after another."""
    timings: List[Timing] = []
    for case in cases:
        timings += time_interleaved(case.label, mode, steps_of(case), rounds, min_seconds, timer=timer)
    return timings


def medians_by_case(timings: Sequence[Timing]) -> Dict[str, Dict[str, float]]:
    """Case label -> implementation -> median seconds, of the timings that have one."""
    medians: Dict[str, Dict[str, float]] = {}
    for t in timings:
        if t.median_s is not None:
            medians.setdefault(t.case, {})[t.implementation] = t.median_s
    return medians


def variant_ratio_table(
    timings: Sequence[Timing], case_column: str, plain: str, variant: str, reference: str, goal: float
) -> str:
    """Markdown: per case the medians (microseconds) of a plain call, a variant of it and the
    reference doing the variant, with variant / plain and reference / variant, under a line
    stating the goals (reported, never asserted): variant / plain <= ``goal``, reference /
    variant > 1."""
    rows = [
        f"Goals (reported, not asserted): {variant} / {plain} <= {goal:.2f}; {reference} / {variant} > 1.",
        "",
        f"| {case_column} | {plain} (us) | {variant} (us) | {reference} (us) | {variant} / {plain} | "
        f"{reference} / {variant} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, by_name in medians_by_case(timings).items():
        medians = [by_name.get(name) for name in (plain, variant, reference)]
        if any(m is None for m in medians):
            continue
        p, v, r = medians
        rows.append(f"| {label} | {p * 1e6:.1f} | {v * 1e6:.1f} | {r * 1e6:.1f} | {v / p:.3f} | {r / v:.2f} |")
    return "\n".join(rows)


def describe_error(error: BaseException) -> str:
    """The error's type and the first line of its message (if any), for a table or JSON."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


# The size of the thread-scaling goal (1 -> 2 threads).
THREAD_SCALING_CASE = Case(65536, 64)


def run_thread_scaling(
    case: Case = THREAD_SCALING_CASE,
    thread_counts: Sequence[int] = (1, 2),
    implementation: str = "fused",
    modes: Sequence[str] = MODES,
    rounds: int = 9,
    min_seconds_per_sample: float = 0.02,
) -> List[Timing]:
    """One implementation at each thread count, the counts alternating round by round.

    The ``1t`` and ``2t`` cases of :func:`run_benchmark` are timed minutes
    apart, so their ratio also compares two states of the process heap: at
    gradients of megabytes glibc's grow-and-trim cycle can move a median by a
    large factor (benchmarks/README.md, "Benchmark runner"). Alternating the
    thread counts within every round shares that drift between them. Returns
    one :class:`Timing` per mode and thread count, with case labels
    ``"<B>x<K> <n>t"`` and ``implementation`` as given.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; choose from {sorted(IMPLEMENTATIONS)}")
    if implementation == "reference_compiled":
        # A compiled graph keeps the thread count it was compiled with.
        raise ValueError("the compiled reference cannot switch thread counts between rounds")
    inputs = case.make_inputs()
    previous_threads = torch.get_num_threads()
    results: List[Timing] = []
    try:
        for mode in modes:
            step = loss_step(IMPLEMENTATIONS[implementation], inputs, mode)
            steps = {f"{n}t": step for n in thread_counts}
            setup = {f"{n}t": functools.partial(torch.set_num_threads, n) for n in thread_counts}
            for t in time_interleaved(case.label, mode, steps, rounds, min_seconds_per_sample, setup):
                results.append(
                    Timing(f"{case.label} {t.implementation}", mode, implementation, t.median_s, rounds, t.samples_s)
                )
    finally:
        torch.set_num_threads(previous_threads)
    return results


def format_thread_scaling(results: Sequence[Timing]) -> str:
    """A Markdown table of :func:`run_thread_scaling`'s medians: each thread
    count's time and its speed-up over the first (fewest threads)."""
    times = by_key(results)
    cases = ordered_unique(r.case for r in results)
    thread_labels = ordered_unique(c.rsplit(" ", 1)[1] for c in cases)
    size = cases[0].rsplit(" ", 1)[0]
    implementation = results[0].implementation
    header = ["B x K", "mode"] + [f"{t} (us)" for t in thread_labels]
    header += [f"{thread_labels[0]} / {t}" for t in thread_labels[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for mode in ordered_unique(r.mode for r in results):
        medians = [times[(f"{size} {t}", mode, implementation)] for t in thread_labels]
        row = [size, mode.replace("_", "+")] + [f"{m * 1e6:.1f}" for m in medians]
        row += [f"{medians[0] / m:.2f}x" for m in medians[1:]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def by_key(results: Sequence[Timing]) -> Dict[tuple, Optional[float]]:
    return {(r.case, r.mode, r.implementation): r.median_s for r in results}


def ordered_unique(values: Iterable[str]) -> List[str]:
    return list(dict.fromkeys(values))


# A device-to-device copy of the bytes the fused op moves (the CUDA suite's roofline).
COPY = "copy"


def _alternatives(names: Sequence[str], baseline: str) -> List[str]:
    """The implementations the baseline is compared with (not the roofline, copy or floor passes)."""
    return [n for n in names if n != baseline and n not in ROOFLINE + FLOOR + (COPY,)]


def _microseconds(seconds: Optional[float]) -> str:
    return "failed" if seconds is None else f"{seconds * 1e6:.1f}"


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> str:
    return "-" if numerator is None or denominator is None else f"{numerator / denominator:.2f}x"


def format_table(results: Sequence[Timing], mode: str = "forward_backward", baseline: str = "fused") -> str:
    """A Markdown table: median microseconds per call, and each one's ratio to ``baseline``.

    A ratio above 1 means the baseline (the fused op) is that many times faster.
    The roofline columns are the other way round: the fused op's time over the
    time of the passes it cannot avoid (forward: one read of the logits;
    forward+backward: a read plus a read/write), 1.0 being at the roofline.
    An implementation that failed at a size shows "failed" and no ratio.
    """
    times = by_key(results)
    cases = ordered_unique(r.case for r in results if r.mode == mode)
    names = ordered_unique(r.implementation for r in results if r.mode == mode)
    others = _alternatives(names, baseline)
    has_roofline = all(n in names for n in ROOFLINE)
    header = ["B x K", f"{baseline} (us)"] + [f"{n} (us)" for n in others] + [f"vs {n}" for n in others]
    # The forward reads the logits once; forward+backward also writes a gradient.
    roofline_parts = ("read_pass",) if mode == "forward" else ROOFLINE
    if has_roofline:
        header += ["roofline (us)", f"{baseline} / roofline"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in cases:
        base = times[(case, mode, baseline)]
        row = [case, _microseconds(base)]
        row += [_microseconds(times.get((case, mode, n))) for n in others]
        row += [_ratio(times.get((case, mode, n)), base) for n in others]
        if has_roofline:
            roofline = sum(times[(case, mode, part)] for part in roofline_parts)
            row += [f"{roofline * 1e6:.1f}", f"{base / roofline:.2f}x"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_floor_comparison(results: Sequence[Timing], baseline: str = "fused") -> str:
    """The fused forward+backward against the cheapest autograd round trips on the same inputs.

    Columns: ``logits.sum()`` and its backward (the floor under any op on the
    logits), ``logits.sum() + log_std.sum()`` (the cheapest round trip that
    returns gradients to both heads, as the fused op does) and
    ``F.cross_entropy(logits, targets)`` (PyTorch's own fused loss on the same
    logits); each ratio is the fused op's time over that one.
    """
    times = by_key(results)
    lines = [
        f"| B x K | {baseline} fwd+bwd (us) | logits.sum() (us) | logits.sum() + log_std.sum() (us) "
        f"| cross_entropy(logits) (us) | / logits.sum() | / both sums | / cross_entropy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in ordered_unique(r.case for r in results if r.implementation == SUM_BACKWARD):
        fused = times[(case, "forward_backward", baseline)]
        floors = [times[(case, "forward_backward", name)] for name in FLOOR]
        lines.append(
            f"| {case} | {fused * 1e6:.1f} | "
            + " | ".join(f"{t * 1e6:.1f}" for t in floors)
            + " | "
            + " | ".join(f"{fused / t:.2f}x" for t in floors)
            + " |"
        )
    return "\n".join(lines)


def machine_description(device: str = "cpu") -> Dict[str, object]:
    """What the numbers were measured on (and the GPU, for ``device="cuda"``)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from .. import _ops

    description: Dict[str, object] = {
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "kernel_isa": _ops.cpu_isa(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        description.update(gpu=props.name, multiprocessors=props.multi_processor_count,
                           gpu_memory_gb=props.total_memory / 1e9, cuda=torch.version.cuda)
    return description


def write_json(
    results: Sequence[Timing],
    path: str,
    thread_scaling: Sequence[Timing] = (),
    device: str = "cpu",
    extra: Optional[Dict[str, object]] = None,
) -> None:
    """Writes every median and raw sample, with the machine description (and ``extra``
    entries, such as the CUDA suite's memory and kernel counts)."""
    document = {"machine": machine_description(device), "results": [asdict(r) for r in results]}
    if thread_scaling:
        document["thread_scaling"] = [asdict(r) for r in thread_scaling]
    document.update(extra or {})
    with open(path, "w") as f:
        json.dump(document, f, indent=1)


def plot_speedups(results: Sequence[Timing], path: str, mode: str = "forward_backward", baseline: str = "fused") -> None:
    """PNG bar chart of the fused op's speed-up over each alternative, per size (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = by_key(results)
    cases = ordered_unique(r.case for r in results if r.mode == mode)
    others = _alternatives(ordered_unique(r.implementation for r in results if r.mode == mode), baseline)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(cases) + 2), 4.5))
    width = 0.8 / max(1, len(others))
    for i, name in enumerate(others):
        # A failed implementation leaves no bar at that size.
        ratios = [
            math.nan if times.get((c, mode, name)) is None else times[(c, mode, name)] / times[(c, mode, baseline)]
            for c in cases
        ]
        ax.bar([x + i * width for x in range(len(cases))], ratios, width, label=f"vs {name}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(cases))])
    ax.set_xticklabels(cases, rotation=45, ha="right")
    ax.set_ylabel(f"speed-up of {baseline} ({mode.replace('_', '+')})")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("hybrid_entropy_ext: fused op speed-up (median ratio, higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
