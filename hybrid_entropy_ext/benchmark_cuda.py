"""The CUDA side of the benchmark: the fused op against the same alternatives, on a GPU.

Timed with CUDA events in interleaved rounds (every implementation once per round, so
that clock and thermal drift hit all of them alike), medians over rounds, like the CPU
suite (:mod:`hybrid_entropy_ext.benchmark`). For each size it also reports:

- the bytes the fused op must move (the logits read once forward; read again and their
  gradient written once backward; log_std and the O(B) row statistics), its GB/s, and
  the time of a device-to-device copy of the same number of bytes measured in the same
  rounds: ``copy / fused`` is the fraction of the copy bandwidth the fused op reaches;
- the peak memory each implementation allocates beyond its inputs during
  forward+backward (``torch.cuda.max_memory_allocated``), and how much of it is not the
  gradient itself;
- the CUDA kernels one fused forward and one fused forward+backward launch (profiler).

Sizes that do not fit, or an implementation that fails at one, are recorded as such and
the run goes on.
"""

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .benchmark import IMPLEMENTATIONS, MODES, _fresh_compiled_reference, _loss_step

__all__ = ["CudaCase", "CUDA_CASES", "CudaTiming", "run_cuda_benchmark", "format_cuda_table",
           "format_cuda_memory", "count_fused_kernels"]


@dataclass(frozen=True)
class CudaCase:
    """logits ``[batch, actions]`` of ``dtype``, log_std ``[batch, dims]``, on the current GPU."""

    batch: int
    actions: int
    dtype: torch.dtype = torch.float32
    dims: int = 8

    @property
    def label(self) -> str:
        suffix = "" if self.dtype == torch.float32 else " " + str(self.dtype).replace("torch.", "")
        return f"{self.batch}x{self.actions}{suffix}"

    def make_inputs(self) -> Dict[str, torch.Tensor]:
        generator = torch.Generator(device="cuda").manual_seed(self.batch * 1000 + self.actions)
        logits = torch.randn(self.batch, self.actions, generator=generator, device="cuda").to(self.dtype)
        log_std = 0.1 * torch.randn(self.batch, self.dims, generator=generator, device="cuda").to(self.dtype)
        return {"logits": logits.requires_grad_(), "log_std": log_std.requires_grad_()}

    def fused_bytes(self, mode: str) -> int:
        """Bytes the fused op cannot avoid moving: forward, one read of the logits and log_std
        and the row statistics written; backward, the logits and row statistics read again
        and the logits' gradient written."""
        element = torch.finfo(self.dtype).bits // 8
        logits = self.batch * self.actions * element
        log_std = self.batch * self.dims * element
        acc = 8 if self.dtype == torch.float64 else 4
        row_stats = 3 * self.batch * acc
        forward = logits + log_std + row_stats
        return forward if mode == "forward" else forward + 2 * logits + row_stats


# The sizes of the CUDA issue: small hybrid action spaces up to large batches, long rows,
# and an LLM vocabulary in bfloat16.
CUDA_CASES = (
    CudaCase(256, 4),
    CudaCase(4096, 16),
    CudaCase(65536, 16),
    CudaCase(65536, 64),
    CudaCase(16384, 256),
    CudaCase(262144, 64),
    CudaCase(4096, 1024),
    CudaCase(16384, 151936, torch.bfloat16),
)

COPY = "copy"


@dataclass
class CudaTiming:
    """Median seconds per call of one implementation at one case and mode (None: failed)."""

    case: str
    mode: str
    implementation: str
    median_s: Optional[float]
    rounds: int
    samples_s: List[float] = field(default_factory=list, repr=False)
    bytes_moved: int = 0
    error: str = ""


def _copy_step(total_bytes: int) -> Callable[[], object]:
    """A device-to-device copy that moves total_bytes (half read, half written)."""
    count = max(1, total_bytes // 2 // 4)
    src = torch.empty(count, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _event_seconds(step: Callable[[], object], repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0 / repeats


def _time_cuda_interleaved(
    label: str, mode: str, steps: Dict[str, Callable[[], object]], rounds: int, min_seconds: float
) -> List[CudaTiming]:
    repeats: Dict[str, int] = {}
    failed: Dict[str, str] = {}
    for name, step in steps.items():  # warm-up: compilation, allocator, lazy init
        try:
            step()
            step()
            torch.cuda.synchronize()
            repeats[name] = max(1, math.ceil(min_seconds / max(_event_seconds(step, 1), 1e-7)))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:  # noqa: PERF203
            failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            torch.cuda.empty_cache()
    samples: Dict[str, List[float]] = {name: [] for name in repeats}
    for _ in range(rounds):
        for name in repeats:
            samples[name].append(_event_seconds(steps[name], repeats[name]))
    results = [CudaTiming(label, mode, name, statistics.median(times), rounds, times)
               for name, times in samples.items()]
    results += [CudaTiming(label, mode, name, None, rounds, error=error) for name, error in failed.items()]
    return results


def peak_extra_bytes(step: Callable[[], object]) -> int:
    """Peak bytes allocated by one call beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak


def count_fused_kernels(case: CudaCase) -> Dict[str, List[str]]:
    """The CUDA kernels of one fused forward (no_grad) and one forward+backward."""
    from torch.profiler import ProfilerActivity, profile

    inputs = case.make_inputs()
    kernels: Dict[str, List[str]] = {}
    for mode in MODES:
        step = _loss_step(IMPLEMENTATIONS["fused"], inputs, mode)
        step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        kernels[mode] = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return kernels


def run_cuda_benchmark(
    cases: Sequence[CudaCase] = CUDA_CASES,
    implementations: Sequence[str] = ("fused", "distributions", "reference", "reference_compiled"),
    modes: Sequence[str] = MODES,
    rounds: int = 7,
    min_seconds_per_sample: float = 0.02,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, object]:
    """Times every implementation and a copy of the fused op's bytes at each case and mode.

    Returns ``{"timings": [CudaTiming...], "peak_extra_bytes": {case: {impl: bytes}},
    "gradient_bytes": {case: bytes}, "kernels": {case: {mode: [names]}}}``.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("run_cuda_benchmark needs a CUDA device")
    timings: List[CudaTiming] = []
    peaks: Dict[str, Dict[str, Optional[int]]] = {}
    gradient_bytes: Dict[str, int] = {}
    kernels: Dict[str, Dict[str, List[str]]] = {}
    for case in cases:
        if progress is not None:
            progress(case.label)
        try:
            inputs = case.make_inputs()
        except torch.cuda.OutOfMemoryError:
            continue
        if "reference_compiled" in implementations:
            _fresh_compiled_reference()
        gradient_bytes[case.label] = inputs["logits"].numel() * inputs["logits"].element_size()
        for mode in modes:
            steps = {name: _loss_step(IMPLEMENTATIONS[name], inputs, mode) for name in implementations}
            steps[COPY] = _copy_step(case.fused_bytes(mode))
            for timing in _time_cuda_interleaved(case.label, mode, steps, rounds, min_seconds_per_sample):
                timing.bytes_moved = case.fused_bytes(mode)
                timings.append(timing)
        peaks[case.label] = {}
        for name in implementations:
            step = _loss_step(IMPLEMENTATIONS[name], inputs, "forward_backward")
            try:
                peaks[case.label][name] = peak_extra_bytes(step)
            except (RuntimeError, torch.cuda.OutOfMemoryError):
                peaks[case.label][name] = None
                torch.cuda.empty_cache()
        if case.batch * case.actions <= 65536 * 64:
            kernels[case.label] = count_fused_kernels(case)
        del inputs
        torch.cuda.empty_cache()
    return {"timings": timings, "peak_extra_bytes": peaks, "gradient_bytes": gradient_bytes, "kernels": kernels}


def _median(timings: Sequence[CudaTiming], case: str, mode: str, name: str) -> Optional[float]:
    for t in timings:
        if (t.case, t.mode, t.implementation) == (case, mode, name):
            return t.median_s
    return None


def format_cuda_table(result: Dict[str, object], mode: str = "forward_backward") -> str:
    """Markdown: microseconds of each implementation, the fused op's speed-up over each,
    its GB/s and its fraction of the copy bandwidth."""
    timings: List[CudaTiming] = result["timings"]  # type: ignore[assignment]
    cases = list(dict.fromkeys(t.case for t in timings if t.mode == mode))
    names = list(dict.fromkeys(t.implementation for t in timings if t.mode == mode and t.implementation != COPY))
    others = [n for n in names if n != "fused"]
    header = ["B x K", "fused (us)"] + [f"{n} (us)" for n in others] + [f"vs {n}" for n in others]
    header += ["MB moved", "fused GB/s", "copy GB/s", "copy / fused"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in cases:
        fused = _median(timings, case, mode, "fused")
        copy = _median(timings, case, mode, COPY)
        moved = next(t.bytes_moved for t in timings if t.case == case and t.mode == mode)

        def us(value: Optional[float]) -> str:
            return "failed" if value is None else f"{value * 1e6:.1f}"

        row = [case, us(fused)] + [us(_median(timings, case, mode, n)) for n in others]
        for n in others:
            other = _median(timings, case, mode, n)
            row.append("-" if other is None or fused is None else f"{other / fused:.2f}x")
        row.append(f"{moved / 1e6:.1f}")
        row.append("-" if fused is None else f"{moved / fused / 1e9:.0f}")
        row.append("-" if copy is None else f"{moved / copy / 1e9:.0f}")
        row.append("-" if copy is None or fused is None else f"{copy / fused:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_cuda_memory(result: Dict[str, object]) -> str:
    """Markdown: peak extra MB of forward+backward per implementation, and the fused op's
    peak beyond its own gradient."""
    peaks: Dict[str, Dict[str, Optional[int]]] = result["peak_extra_bytes"]  # type: ignore[assignment]
    gradients: Dict[str, int] = result["gradient_bytes"]  # type: ignore[assignment]
    names = list(dict.fromkeys(n for per_case in peaks.values() for n in per_case))
    header = ["B x K", "gradient (MB)"] + [f"{n} (MB)" for n in names] + ["fused beyond gradient (MB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case, per_case in peaks.items():
        row = [case, f"{gradients[case] / 1e6:.1f}"]
        row += ["failed" if per_case.get(n) is None else f"{per_case[n] / 1e6:.1f}" for n in names]
        fused = per_case.get("fused")
        row.append("-" if fused is None else f"{(fused - gradients[case]) / 1e6:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cuda_result_as_json(result: Dict[str, object]) -> Dict[str, object]:
    document = dict(result)
    document["timings"] = [asdict(t) for t in result["timings"]]  # type: ignore[union-attr]
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    document["device"] = {"name": props.name, "multiprocessors": props.multi_processor_count,
                          "memory_gb": props.total_memory / 1e9, "torch": torch.__version__,
                          "cuda": torch.version.cuda}
    return document
