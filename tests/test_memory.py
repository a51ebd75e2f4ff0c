"""Memory: no leaks over many calls, O(B) saved state, one gradient of extra memory.

- RSS after 20_000 forward+backward calls (after a warm-up) grows by less than 2 MiB, i.e.
  less than ~100 bytes per call: leaking any per-call tensor (the 0-dim outputs, the [3, B]
  row statistics, the autograd node) would show several times over. The 10^5-call run is
  opt-in (``HEE_RUN_SLOW=1``) and prints its numbers with ``-s``.
- What the autograd node packs for backward (``saved_tensors_hooks``) is only the inputs
  themselves and tensors of O(B) elements: never a new [B, K] tensor (docs/design.md: the forward
  keeps per-row statistics, not a softmax).
- Allocations through torch's CPU allocator during one forward+backward (profiler,
  ``profile_memory=True``: every allocation and its size) add up to the gradients plus O(B)
  bytes; the forward alone allocates O(B) bytes.
- The peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) of a fresh process
  during one forward+backward of 128 MiB of logits rises by no more than one gradient-sized
  buffer plus a little: this also sees memory outside torch's allocator.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import hybrid_entropy_ext as hee
from common_utils import slow
from op_variants import FUSED_OP_VARIANTS, make_sample

MIB = 2 ** 20


def o_of_b_bytes(batch):
    """O(B) allowance: the [3, B] row statistics (at most float64) plus the seven 0-dim
    outputs and the allocator's rounding, with room to spare: 8 float64 values per row and
    64 KiB."""
    return 8 * 8 * batch + 64 * 1024


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def training_step(logits, log_std, coeff):
    out = hee.hybrid_entropy_loss(logits, log_std, coeff, 1.0, 0.5, 10.0, 10.0, 3.0)
    return torch.autograd.grad(out["total"] + out["discrete_entropy"], (logits, log_std, coeff))


def rss_growth_over(calls, step):
    for _ in range(2_000):  # warm-up: allocator caches, autograd and thread-pool state
        step()
    before = rss_bytes()
    for _ in range(calls):
        step()
    return rss_bytes() - before


# --------------------------------------------------------------------------------------
# Leaks
# --------------------------------------------------------------------------------------


def test_rss_is_stable_over_20000_forward_backward_calls():
    inputs = make_sample(64, 7, 3, torch.float32, requires_grad=True)
    growth = rss_growth_over(20_000, lambda: training_step(*inputs))
    assert growth < 2 * MIB, f"RSS grew by {growth / MIB:.2f} MiB over 20000 calls"


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_rss_is_stable_over_20000_calls_of_the_scripted_regularizer():
    regularizer = torch.jit.script(hee.HybridEntropyRegularizer(min_entropy_threshold=10.0))
    logits, log_std, _ = make_sample(64, 7, 3, torch.float32, requires_grad=True)

    def step():
        out = regularizer(logits, log_std, 7)
        torch.autograd.grad(out["total"], (logits, log_std))

    growth = rss_growth_over(20_000, step)
    assert growth < 2 * MIB, f"RSS grew by {growth / MIB:.2f} MiB over 20000 calls"


@slow
def test_rss_is_stable_over_100000_forward_backward_calls():
    inputs = make_sample(64, 7, 3, torch.float32, requires_grad=True)
    step = lambda: training_step(*inputs)  # noqa: E731
    for _ in range(2_000):
        step()
    start = rss_bytes()
    checkpoints = []
    for i in range(1, 100_001):
        step()
        if i % 20_000 == 0:
            checkpoints.append(rss_bytes() - start)
    print(f"\nRSS after warm-up {start / MIB:.1f} MiB; growth after 20k/40k/.../100k calls (KiB): "
          + ", ".join(f"{c / 1024:.0f}" for c in checkpoints))
    assert checkpoints[-1] < 2 * MIB


# --------------------------------------------------------------------------------------
# What is saved for backward
# --------------------------------------------------------------------------------------


def packed_for_backward(logits, log_std, coeff):
    packed = []

    def pack(t):
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hee.hybrid_entropy_loss(logits, log_std, coeff, 1.0, 0.5, 10.0, 10.0, 3.0)
    return packed


def same_tensor(a, b):
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


SAVED_B, SAVED_K, SAVED_D = 512, 300, 4


def assert_saves_only_the_inputs_and_o_of_b_statistics(logits, log_std, coeff):
    b = SAVED_B
    packed = packed_for_backward(logits, log_std, coeff)
    inputs = [t for t in (logits, log_std, coeff) if t is not None]
    assert packed, "nothing saved: the backward could not be exact"
    for t in packed:
        if any(same_tensor(t, x) for x in inputs):
            continue  # an input itself, not a copy
        assert t.numel() <= 3 * b, f"saved a new tensor of shape {tuple(t.shape)}"
    # Every input that needs a gradient and carries data for it is among the saved ones.
    for x in (logits, log_std):
        if x is not None:
            assert any(same_tensor(t, x) for t in packed)


@pytest.mark.parametrize("variant", FUSED_OP_VARIANTS, ids=str)
def test_only_the_inputs_and_o_of_b_statistics_are_saved_for_backward(variant):
    # Every argument form: one head or two, a shared [D] log_std, a per-head coefficient.
    sample = variant.sample_inputs(SAVED_B, SAVED_K, SAVED_D, torch.float32, requires_grad=True)
    assert_saves_only_the_inputs_and_o_of_b_statistics(*sample)


@pytest.mark.parametrize("case", ["transposed-logits", "bfloat16"])
def test_only_the_inputs_and_o_of_b_statistics_are_saved_for_backward_whatever_the_layout_and_dtype(case):
    b, k, d = SAVED_B, SAVED_K, SAVED_D
    dtype = torch.bfloat16 if case == "bfloat16" else torch.float32
    logits = torch.randn(k, b).t() if case == "transposed-logits" else torch.randn(b, k)
    logits = logits.to(dtype).requires_grad_(True)
    log_std = torch.randn(b, d).to(dtype).requires_grad_(True)
    coeff = torch.tensor(0.1, requires_grad=True)
    assert_saves_only_the_inputs_and_o_of_b_statistics(logits, log_std, coeff)


# --------------------------------------------------------------------------------------
# Allocations and peak memory
# --------------------------------------------------------------------------------------


def allocation_bytes(fn, tmp_path):
    """Sum and peak of the allocations made through torch's CPU allocator during fn()."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace))
    events = [e["args"] for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    allocated = sum(e["Bytes"] for e in events if e["Bytes"] > 0)
    # "Total Allocated" is a running total that may carry blocks of earlier profiling
    # sessions (freed while not profiling): measure the rise above its value at the start.
    if not events:
        return allocated, 0, result
    start = events[0]["Total Allocated"] - events[0]["Bytes"]
    peak = max(e["Total Allocated"] for e in events) - start
    return allocated, peak, result


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_forward_allocates_only_o_of_b_bytes(dtype, tmp_path):
    b, k = 4096, 1000
    logits = torch.randn(b, k).to(dtype).requires_grad_(True)
    log_std = torch.randn(b, 3).to(dtype).requires_grad_(True)
    allocated, peak, _ = allocation_bytes(
        lambda: hee.hybrid_entropy_loss(logits, log_std, 0.1, 1.0, 0.5, 10.0, 10.0, 3.0), tmp_path)
    assert 3 * b * 4 <= allocated <= o_of_b_bytes(b)  # the [3, B] row statistics and scalars
    assert peak <= o_of_b_bytes(b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_forward_backward_allocates_the_gradients_plus_o_of_b_bytes(dtype, tmp_path):
    b, k, d = 4096, 1000, 3
    logits = torch.randn(b, k).to(dtype).requires_grad_(True)
    log_std = torch.randn(b, d).to(dtype).requires_grad_(True)
    coeff = torch.tensor(0.1, requires_grad=True)
    allocated, peak, grads = allocation_bytes(lambda: training_step(logits, log_std, coeff), tmp_path)
    gradient_bytes = sum(g.numel() * g.element_size() for g in grads)
    assert gradient_bytes <= allocated <= gradient_bytes + o_of_b_bytes(b)
    assert peak <= gradient_bytes + o_of_b_bytes(b)


PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import json, re, sys
    import torch
    import hybrid_entropy_ext as hee

    def status(field):
        with open("/proc/self/status") as f:
            return int(re.search(field + r":\\s+(\\d+) kB", f.read()).group(1)) * 1024

    b, k, d = 16384, 2048, 8
    logits = torch.randn(b, k, requires_grad=True)   # 128 MiB, allocated once
    log_std = torch.randn(b, d, requires_grad=True)
    coeff = torch.tensor(0.1, requires_grad=True)
    # Warm-up at a size that starts the intra-op threads, then forget the high-water mark.
    small = torch.randn(512, k, requires_grad=True)
    torch.autograd.grad(hee.hybrid_entropy_loss(small, None, 0.1)["total"], small)
    del small
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as error:
        print(json.dumps({"skip": str(error)}))
        sys.exit(0)
    before = status("VmRSS")
    assert status("VmHWM") <= before + 2 ** 20
    out = hee.hybrid_entropy_loss(logits, log_std, coeff, 1.0, 0.5, 10.0, 10.0, 3.0)
    grads = torch.autograd.grad(out["total"], (logits, log_std, coeff))
    print(json.dumps({
        "rise": status("VmHWM") - before,
        "gradient_bytes": sum(g.numel() * g.element_size() for g in grads),
        "batch": b,
    }))
    """
)


def test_peak_rss_of_forward_backward_is_one_gradient_plus_o_of_b():
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT], capture_output=True,
                            text=True, timeout=300, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if "skip" in report:
        pytest.skip(f"cannot reset the RSS high-water mark: {report['skip']}")
    # A second [B, K] buffer (a softmax, a contiguous copy) would double the rise.
    allowed = report["gradient_bytes"] + o_of_b_bytes(report["batch"]) + 8 * MIB
    assert report["rise"] <= allowed, report
