"""The CUDA side of the benchmark: the CPU suite's cases, implementations, interleaved
rounds and tables (:mod:`hybrid_entropy_ext.benchmarking.runner`), timed with CUDA events on the
current GPU. For each size it also reports:

- the bytes the fused op must move (:meth:`Case.fused_bytes`), its GB/s, and the time of
  a device-to-device copy of the same number of bytes measured in the same rounds:
  ``copy / fused`` is the fraction of the copy bandwidth the fused op reaches;
- the peak memory each implementation allocates beyond its inputs during
  forward+backward (``torch.cuda.max_memory_allocated``), and how much of the fused op's
  is not its gradient;
- the CUDA kernels one fused forward and one fused forward+backward launch (profiler).

An implementation that runs out of memory or fails at a size is reported as failed and
the run goes on.
"""

from typing import Callable, Dict, List, Optional, Sequence

import torch

from .runner import (
    COPY,
    IMPLEMENTATIONS,
    MODES,
    Case,
    Timing,
    by_key,
    fresh_compiled_reference,
    loss_step,
    ordered_unique,
    recompile_limit_raises,
    time_interleaved,
)

__all__ = ["CUDA_CASES", "CUDA_QUICK_CASES", "run_cuda_benchmark", "format_bandwidth", "format_cuda_memory",
           "count_fused_kernels", "cuda_event_seconds", "copy_step", "peak_extra_bytes"]

# The GPU suite's sizes: small hybrid action spaces up to large batches, long rows, and an
# LLM vocabulary in bfloat16.
CUDA_CASES = (
    Case(256, 4),
    Case(4096, 16),
    Case(65536, 16),
    Case(65536, 64),
    Case(16384, 256),
    Case(262144, 64),
    Case(4096, 1024),
    Case(16384, 151936, dtype=torch.bfloat16),
)
CUDA_QUICK_CASES = (Case(256, 4), Case(65536, 64), Case(4096, 1024))

_FAILURES = (RuntimeError, torch.cuda.OutOfMemoryError)


def cuda_event_seconds(step: Callable[[], object], repeats: int) -> float:
    """Seconds per call of `repeats` calls, between two CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0 / repeats


def copy_step(total_bytes: int) -> Callable[[], object]:
    """A device-to-device copy that moves total_bytes (half read, half written)."""
    count = max(1, total_bytes // 2 // 4)
    src = torch.empty(count, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


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


def count_fused_kernels(inputs: Dict[str, torch.Tensor]) -> Dict[str, List[str]]:
    """The CUDA kernels of one fused forward (no_grad) and one forward+backward."""
    from torch.profiler import ProfilerActivity, profile

    kernels: Dict[str, List[str]] = {}
    for mode in MODES:
        step = loss_step(IMPLEMENTATIONS["fused"], inputs, mode)
        step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        kernels[mode] = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return kernels


def run_cuda_benchmark(
    cases: Sequence[Case] = CUDA_CASES,
    implementations: Sequence[str] = ("fused", "distributions", "reference", "reference_compiled"),
    modes: Sequence[str] = MODES,
    rounds: int = 7,
    min_seconds_per_sample: float = 0.02,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, object]:
    """Times every implementation and a copy of the fused op's bytes at each case and mode.

    Returns ``{"timings": [Timing...], "bytes_moved": {(case, mode): bytes},
    "peak_extra_bytes": {case: {impl: bytes or None}}, "gradient_bytes": {case: bytes},
    "kernels": {case: {mode: [names]}}}``.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("run_cuda_benchmark needs a CUDA device")
    timings: List[Timing] = []
    bytes_moved: Dict[tuple, int] = {}
    peaks: Dict[str, Dict[str, Optional[int]]] = {}
    gradient_bytes: Dict[str, int] = {}
    kernels: Dict[str, Dict[str, List[str]]] = {}
    for case in cases:
        if progress is not None:
            progress(case.label)
        try:
            inputs = case.make_inputs("cuda")
        except torch.cuda.OutOfMemoryError:
            continue
        if "reference_compiled" in implementations:
            fresh_compiled_reference()
        gradient_bytes[case.label] = inputs["logits"].numel() * inputs["logits"].element_size()
        for mode in modes:
            steps = {name: loss_step(IMPLEMENTATIONS[name], inputs, mode) for name in implementations}
            steps[COPY] = copy_step(case.fused_bytes(mode))
            bytes_moved[(case.label, mode)] = case.fused_bytes(mode)
            with recompile_limit_raises(enabled="reference_compiled" in implementations):
                timings.extend(time_interleaved(case.label, mode, steps, rounds, min_seconds_per_sample,
                                                 timer=cuda_event_seconds, failures=_FAILURES))
        peaks[case.label] = {}
        for name in implementations:
            try:
                peaks[case.label][name] = peak_extra_bytes(loss_step(IMPLEMENTATIONS[name], inputs, "forward_backward"))
            except _FAILURES:
                peaks[case.label][name] = None
                torch.cuda.empty_cache()
        if case.batch * case.actions <= 65536 * 64:
            kernels[case.label] = count_fused_kernels(inputs)
        del inputs
        torch.cuda.empty_cache()
    return {"timings": timings, "bytes_moved": bytes_moved, "peak_extra_bytes": peaks,
            "gradient_bytes": gradient_bytes, "kernels": kernels}


def format_bandwidth(result: Dict[str, object], mode: str = "forward_backward") -> str:
    """Markdown: the bytes the fused op moves, its GB/s, the copy's GB/s on the same bytes,
    and copy / fused, the fraction of the copy bandwidth the fused op reaches."""
    times = by_key(result["timings"])  # type: ignore[arg-type]
    moved: Dict[tuple, int] = result["bytes_moved"]  # type: ignore[assignment]
    lines = ["| B x K | MB moved | fused GB/s | copy GB/s | copy / fused |", "|---|---|---|---|---|"]
    for case in ordered_unique(c for c, m in moved if m == mode):
        nbytes = moved[(case, mode)]
        fused, copy = times.get((case, mode, "fused")), times.get((case, mode, COPY))
        row = [case, f"{nbytes / 1e6:.1f}"]
        row += ["-" if t is None else f"{nbytes / t / 1e9:.0f}" for t in (fused, copy)]
        row.append("-" if fused is None or copy is None else f"{copy / fused:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_cuda_memory(result: Dict[str, object]) -> str:
    """Markdown: peak extra MB of forward+backward per implementation, and the fused op's
    peak beyond its own gradient."""
    peaks: Dict[str, Dict[str, Optional[int]]] = result["peak_extra_bytes"]  # type: ignore[assignment]
    gradients: Dict[str, int] = result["gradient_bytes"]  # type: ignore[assignment]
    names = ordered_unique(n for per_case in peaks.values() for n in per_case)
    header = ["B x K", "gradient (MB)"] + [f"{n} (MB)" for n in names] + ["fused beyond gradient (MB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case, per_case in peaks.items():
        row = [case, f"{gradients[case] / 1e6:.1f}"]
        row += ["failed" if per_case.get(n) is None else f"{per_case[n] / 1e6:.1f}" for n in names]
        fused = per_case.get("fused")
        row.append("-" if fused is None else f"{(fused - gradients[case]) / 1e6:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
