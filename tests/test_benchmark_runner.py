"""The benchmark runner times what its columns say (the numbers themselves are never asserted)."""

import pytest
import torch

from hybrid_entropy_ext.benchmarking import runner as hee_benchmark


def _tiny_cases(n):
    return [hee_benchmark.Case(batch=2 + i, actions=3, dims=2) for i in range(n)]


def test_compiled_reference_compiles_each_case_past_the_recompile_limit():
    import torch._dynamo

    cases = _tiny_cases(torch._dynamo.config.recompile_limit + 1)
    # The runner makes a recompile-limit hit raise, so finishing means every
    # case ran compiled code rather than the eager fallback.
    results = hee_benchmark.run_benchmark(
        cases, implementations=["reference_compiled"], modes=("forward",), rounds=1, min_seconds_per_sample=0.0
    )
    assert [r.case for r in results] == [c.label for c in cases]


def test_runner_raises_instead_of_timing_eager_code_as_compiled():
    import torch._dynamo

    # One case, two modes: two graphs, one over a limit of 1.
    with torch._dynamo.config.patch(recompile_limit=1):
        with pytest.raises(Exception, match="(?i)recompile|cache.*limit"):
            hee_benchmark.run_benchmark(
                _tiny_cases(1), implementations=["reference_compiled"], rounds=1, min_seconds_per_sample=0.0
            )


def test_runner_reports_one_median_per_case_mode_and_implementation():
    results = hee_benchmark.run_benchmark(
        _tiny_cases(2), implementations=["fused", "reference"], rounds=3, min_seconds_per_sample=0.0
    )
    keys = [(r.case, r.mode, r.implementation) for r in results]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2
    assert all(r.median_s > 0 and len(r.samples_s) == 3 for r in results)


def test_floor_table_gives_the_fused_time_over_each_round_trip():
    results = hee_benchmark.run_benchmark(
        _tiny_cases(2),
        implementations=["fused"],
        modes=("forward_backward",),
        rounds=1,
        min_seconds_per_sample=0.0,
        include_roofline=True,
    )
    times = {(r.case, r.implementation): r.median_s for r in results}
    rows = hee_benchmark.format_floor_comparison(results).splitlines()[2:]
    assert len(rows) == 2
    for case, row in zip(_tiny_cases(2), rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == case.label
        fused = times[(case.label, "fused")]
        for cell, name in zip(cells[-3:], hee_benchmark.FLOOR):
            assert cell == f"{fused / times[(case.label, name)]:.2f}x"


def test_thread_scaling_times_each_thread_count_in_every_round_and_restores_the_count():
    before = torch.get_num_threads()
    seen_counts = []
    step = hee_benchmark.IMPLEMENTATIONS["fused"]

    def recording_step(logits, log_std, coeff):
        seen_counts.append(torch.get_num_threads())
        return step(logits, log_std, coeff)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(hee_benchmark.IMPLEMENTATIONS, "fused", recording_step)
        results = hee_benchmark.run_thread_scaling(
            hee_benchmark.Case(8, 3, dims=2), thread_counts=(1, 2), rounds=3, min_seconds_per_sample=0.0
        )
    assert torch.get_num_threads() == before
    assert [(r.case, r.mode) for r in results] == [
        ("8x3 1t", "forward"),
        ("8x3 2t", "forward"),
        ("8x3 1t", "forward_backward"),
        ("8x3 2t", "forward_backward"),
    ]
    assert all(r.implementation == "fused" and len(r.samples_s) == 3 for r in results)
    # Each mode: warm-up (2 calls) and calibration (1) per count, then the rounds alternate.
    per_mode = [1, 1, 1, 2, 2, 2] + [1, 2] * 3
    assert seen_counts == per_mode * 2


def test_thread_scaling_refuses_the_compiled_reference():
    with pytest.raises(ValueError, match="thread count"):
        hee_benchmark.run_thread_scaling(implementation="reference_compiled")


def test_thread_scaling_table_gives_the_speed_up_over_the_fewest_threads():
    results = hee_benchmark.run_thread_scaling(
        hee_benchmark.Case(8, 3, dims=2), thread_counts=(1, 2), rounds=1, min_seconds_per_sample=0.0
    )
    times = {(r.case, r.mode): r.median_s for r in results}
    rows = hee_benchmark.format_thread_scaling(results).splitlines()[2:]
    assert len(rows) == 2
    for mode, row in zip(("forward", "forward_backward"), rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:2] == ["8x3", mode.replace("_", "+")]
        assert cells[-1] == f"{times[('8x3 1t', mode)] / times[('8x3 2t', mode)]:.2f}x"


# --- the CUDA suite's accounting (its timings need a GPU; its arithmetic does not) ------


def test_case_counts_the_bytes_the_fused_op_cannot_avoid():
    case = hee_benchmark.Case(1000, 64, dims=8, dtype=torch.bfloat16)
    logits, log_std, row_stats = 1000 * 64 * 2, 1000 * 8 * 2, 3 * 1000 * 4
    assert case.fused_bytes("forward") == logits + log_std + row_stats
    # backward: the logits and row statistics read again, the gradient written
    assert case.fused_bytes("forward_backward") == logits + log_std + row_stats + 2 * logits + row_stats


def test_case_label_names_a_dtype_other_than_float32():
    assert hee_benchmark.Case(16384, 151936, dtype=torch.bfloat16).label == "16384x151936 bfloat16"
    assert hee_benchmark.Case(256, 4).label == "256x4"


def test_a_step_that_fails_at_warm_up_is_reported_failed_and_the_others_timed():
    def out_of_memory():
        raise MemoryError("no room")

    results = hee_benchmark.time_interleaved(
        "2x3", "forward", {"fine": lambda: None, "huge": out_of_memory}, rounds=2, min_seconds=0.0,
        failures=(MemoryError,))
    by_name = {r.implementation: r for r in results}
    assert by_name["fine"].median_s is not None and len(by_name["fine"].samples_s) == 2
    assert by_name["huge"].median_s is None and by_name["huge"].error == "MemoryError: no room"


def test_table_shows_a_failed_implementation_as_failed_without_a_ratio():
    Timing = hee_benchmark.Timing
    results = [Timing("8x4", "forward_backward", "fused", 0.002, 3), Timing("8x4", "forward_backward", "reference", 0.010, 3),
               Timing("8x4", "forward_backward", "distributions", None, 3, error="OOM")]
    row = hee_benchmark.format_table(results).splitlines()[2].split(" | ")
    assert row[1:5] == ["2000.0", "10000.0", "failed", "5.00x"] and row[5] == "- |"


def test_bandwidth_table_reports_gb_per_s_and_the_fraction_of_the_copy():
    from hybrid_entropy_ext.benchmarking.cuda import format_bandwidth

    Timing = hee_benchmark.Timing
    result = {"timings": [Timing("8x4", "forward_backward", "fused", 0.002, 3),
                          Timing("8x4", "forward_backward", hee_benchmark.COPY, 0.0016, 3)],
              "bytes_moved": {("8x4", "forward_backward"): 4_000_000_000}}
    assert format_bandwidth(result).splitlines()[2] == "| 8x4 | 4000.0 | 2000 | 2500 | 0.80 |"


def test_cuda_memory_table_reports_the_fused_peak_beyond_its_gradient():
    from hybrid_entropy_ext.benchmarking.cuda import format_cuda_memory

    result = {"peak_extra_bytes": {"8x4": {"fused": 3_000_000, "reference": None}},
              "gradient_bytes": {"8x4": 2_500_000}}
    row = format_cuda_memory(result).splitlines()[2]
    assert row == "| 8x4 | 2.5 | 3.0 | failed | 0.50 |"
