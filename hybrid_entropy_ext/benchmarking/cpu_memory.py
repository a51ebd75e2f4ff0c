"""Peak bytes that one call allocates through torch's CPU allocator, beyond what was allocated
before it (the profiler's memory events, as tests/test_memory.py reads them).

The CPU twin of :func:`hybrid_entropy_ext.benchmarking.cuda.peak_extra_bytes`. It sees only
torch's allocator: memory a library takes from malloc directly is not counted.
"""

import json
import os
import tempfile
from typing import Callable

from torch.profiler import ProfilerActivity, profile

__all__ = ["cpu_peak_extra_bytes"]


def cpu_peak_extra_bytes(step: Callable[[], object]) -> int:
    """Peak bytes allocated during ``step()`` above the bytes allocated when it started.

    What ``step`` returns is held until it ends, so its result (a gradient) counts.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = step()
    # The chrome trace is the profiler's one public form that carries the running total.
    with tempfile.TemporaryDirectory() as folder:
        trace = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(trace)
        with open(trace) as f:
            events = [e["args"] for e in json.load(f)["traceEvents"] if e.get("name") == "[memory]"]
    del result
    if not events:
        return 0
    # "Total Allocated" may carry blocks of earlier profiling sessions that were freed while
    # no profiler ran: the rise above its value before the first event is what counts.
    start = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(0, max(e["Total Allocated"] for e in events) - start)
