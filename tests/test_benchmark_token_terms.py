"""The per-token terms benchmark's machinery (benchmarking/token_terms.py): every
implementation is timed or marked unavailable, ratios come from the medians, memory figures
are there, and every implementation computes the same terms. Timings are never asserted.
"""

import pytest
import torch

import hybrid_entropy_ext as hee
from hybrid_entropy_ext.benchmarking import token_terms as tt
from hybrid_entropy_ext.benchmarking.runner import Timing

TINY_CASES = (
    tt.TokenCase((16,), 50, torch.float32, mask_fraction=0.9, group=tt.LLM),
    tt.TokenCase((2, 8), 50, torch.bfloat16, mask_fraction=0.9, group=tt.LLM),
    tt.TokenCase((64,), 4),
)


def _dynamo_only_compile():
    # The suite's builder runs Inductor, seconds per case; Dynamo alone keeps the
    # "compiled" row (a fresh cache, fullgraph, the recompile-limit guard) within the test's time.
    import torch._dynamo

    torch._dynamo.reset()
    return torch.compile(tt.eager_log_prob_and_entropy, backend="eager", fullgraph=True, dynamic=False)


def _run(builders, cases=TINY_CASES):
    return tt.run_token_terms(cases, rounds=2, min_seconds_per_sample=0.0, builders=builders)


@pytest.fixture(scope="module")
def quick_result():
    return _run(dict(tt.BUILDERS, compiled=_dynamo_only_compile))


def test_the_fused_implementation_is_the_packages_op():
    assert tt.fused_log_prob_and_entropy() is hee.log_prob_and_entropy


def test_every_implementation_is_timed_or_marked_unavailable(quick_result):
    expected = {"fused": True, "trl_chunked": tt.trl_version() is not None}
    for case in TINY_CASES:
        names = tt.IMPLEMENTATIONS_BY_GROUP[case.group]
        timings = [t for t in quick_result.timings if t.case == case.label]
        assert sorted(t.implementation for t in timings) == sorted(names)
        for t in timings:
            assert t.mode == "forward_backward"
            if expected.get(t.implementation, True):
                assert t.median_s is not None and len(t.samples_s) == 2, t
            else:
                assert t.median_s is None and t.error.startswith("unavailable: "), t


def test_memory_figures_are_there_for_what_ran(quick_result):
    timed = {(t.case, t.implementation) for t in quick_result.timings if t.median_s is not None}
    for case in TINY_CASES:
        peaks = quick_result.peak_extra_bytes[case.label]
        assert list(peaks) == list(tt.IMPLEMENTATIONS_BY_GROUP[case.group])
        for name, peak in peaks.items():
            if (case.label, name) in timed:
                # Every implementation returns the logits' gradient, allocated in the call.
                assert peak >= case.gradient_bytes, (case.label, name, peak)
            else:
                assert peak is None
    table = tt.format_memory_table(quick_result, tt.RL)
    assert "| 64x4 | 64 | 0.00 |" in table


def test_ratios_are_each_median_over_the_fused_median():
    # A test double in the fused row (the reference, under the name the ratios are taken
    # against): the ratios are checked, not the op.
    from hybrid_entropy_ext import reference

    rl_cases = [c for c in TINY_CASES if c.group == tt.RL]  # nothing to compile: quicker
    result = _run(dict(tt.BUILDERS, fused=lambda: reference.log_prob_and_entropy), rl_cases)
    medians = {(t.case, t.implementation): t.median_s for t in result.timings}
    ratios = tt.speedups(result)
    assert ratios
    for (case, name), ratio in ratios.items():
        assert ratio == medians[(case, name)] / medians[(case, "fused")]
    for case in rl_cases:
        for name in tt.IMPLEMENTATIONS_BY_GROUP[case.group][1:]:
            assert ((case.label, name) in ratios) == (medians[(case.label, name)] is not None)


def test_extra_steps_are_timed_in_the_same_rounds_and_kept_out_of_the_comparison():
    # The GPU suite's copy of the fused op's bytes goes through this door.
    rl_case = TINY_CASES[-1]
    result = tt.run_token_terms([rl_case], rounds=2, min_seconds_per_sample=0.0,
                                extra_steps=lambda case, inputs: {"copy": inputs["logits"].detach().clone})
    copy = [t for t in result.timings if t.implementation == "copy"]
    assert len(copy) == 1 and len(copy[0].samples_s) == 2
    assert "copy" not in result.peak_extra_bytes[rl_case.label]
    assert all(name != "copy" for _, name in tt.speedups(result))


def _synthetic_result():
    case = tt.TokenCase((1000,), 8)
    timings = [Timing(case.label, "forward_backward", "fused", 0.001, 3),
               Timing(case.label, "forward_backward", "categorical", 0.012, 3),
               Timing(case.label, "forward_backward", "eager", None, 3, error="unavailable: not here")]
    peaks = {case.label: {"fused": case.gradient_bytes + 8000, "categorical": 100_000, "eager": None}}
    return tt.TokenTermsResult(timings, peaks, {case.label: case})


def test_timing_table_gives_the_ratios_and_the_goals():
    row = tt.format_timing_table(_synthetic_result(), tt.RL).splitlines()[2]
    assert row == "| 1000x8 | 1000 | 1000.0 | 12000.0 | unavailable | 12.00x | - | met |"


def test_memory_table_gives_the_fused_peak_beyond_the_gradient_per_row():
    row = tt.format_memory_table(_synthetic_result(), tt.RL).splitlines()[2]
    assert row == "| 1000x8 | 1000 | 0.03 | 0.04 | 0.10 | unavailable | 0.01 | 8.0 |"


def test_report_lists_what_was_not_timed_and_why():
    report = tt.format_report(_synthetic_result())
    assert "categorical / fused >= 10x" in report
    assert report.endswith("- eager (1000x8): unavailable: not here")


@pytest.mark.parametrize("case", TINY_CASES, ids=lambda c: c.label)
def test_every_implementation_computes_the_references_gradient(case):
    from hybrid_entropy_ext import reference

    inputs = case.make_inputs()
    expected = tt.training_step(reference.log_prob_and_entropy, inputs, case.temperature)()[0]
    # `compiled` is `eager` compiled: the suite's timings check that it runs.
    for name in [n for n in tt.IMPLEMENTATIONS_BY_GROUP[case.group] if n != "compiled"]:
        try:
            terms = tt.BUILDERS[name]()
        except tt.Unavailable:
            continue
        gradient = tt.training_step(terms, inputs, case.temperature)()[0]
        # 16-bit logits get a 16-bit gradient, and TRL computes in bfloat16 for bfloat16
        # logits (about 1e-2 of the gradient's largest element here): the same terms, not bits.
        tolerance = dict(rtol=2e-2, atol=2e-2) if case.dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gradient, expected, **tolerance, msg=name)


def test_cuda_bytes_count_the_kept_rows_twice_and_the_whole_gradient_once():
    from hybrid_entropy_ext.benchmarking.token_terms_cuda import fused_bytes

    case = tt.TokenCase((10,), 100, torch.bfloat16, mask_fraction=0.5, group=tt.LLM)
    inputs = case.make_inputs()
    kept = int(inputs["mask"].sum())
    row, per_row = 100 * 2, 8 + 1  # bfloat16 logits; int64 action and bool mask
    assert fused_bytes(case, inputs) == 2 * kept * row + 10 * row + 2 * 10 * per_row + 2 * 10 * 8


def test_the_masked_loss_benchmark_times_both_calls_and_reports_their_ratio():
    from hybrid_entropy_ext.benchmarking import masked_loss

    calls = iter(range(1, 1000))
    # A fake timer: every sample takes one more second than the last, so the ratio is
    # known without timing anything.
    timings = masked_loss.run_masked_loss(masked_loss.QUICK_MASKED_CASES, rounds=1, min_seconds_per_sample=0.0,
                                          timer=lambda step, repeats: (step(), float(next(calls)))[1])
    by_name = {t.implementation: t.median_s for t in timings}
    assert set(by_name) == {"plain", "masked"} and all(v is not None for v in by_name.values())
    table = masked_loss.format_masked_table(timings)
    assert f"{by_name['masked'] / by_name['plain']:.3f}" in table


@pytest.mark.parametrize(
    "suite, run, table, cases, variant",
    [
        ("action_mask", "run_action_mask", "format_action_mask_table", "QUICK_ACTION_MASK_CASES", "masked"),
        ("sub_heads", "run_sub_heads", "format_sub_heads_table", "QUICK_SUB_HEADS_CASES", "sub_heads"),
        ("parameterized", "run_parameterized", "format_parameterized_table", "QUICK_PARAMETERIZED_CASES",
         "parameterized"),
    ],
    ids=["action-mask", "sub-heads", "parameterized"],
)
def test_a_variant_benchmark_times_the_three_calls_and_reports_their_ratios(suite, run, table, cases, variant):
    import importlib

    module = importlib.import_module(f"hybrid_entropy_ext.benchmarking.{suite}")
    calls = iter(range(1, 1000))
    # The fake timer of the masked-loss test: each sample one second longer than the last.
    timings = getattr(module, run)(getattr(module, cases), rounds=1, min_seconds_per_sample=0.0,
                                   timer=lambda step, repeats: (step(), float(next(calls)))[1])
    text = getattr(module, table)(timings)
    for case in getattr(module, cases):
        by_name = {t.implementation: t.median_s for t in timings if t.case == case.label}
        assert set(by_name) == {"plain", variant, "reference"} and all(v is not None for v in by_name.values())
        row = next(line for line in text.splitlines() if line.startswith(f"| {case.label} |"))
        assert f"{by_name[variant] / by_name['plain']:.3f}" in row
        assert f"{by_name['reference'] / by_name[variant]:.2f}" in row


# (suite module, its quick cases, the variant's step name, case index): each variant's call
# and the reference doing the same give the same gradients, which differ from the plain call's.
VARIANT_STEPS = {
    "action_mask-log_prob_and_entropy": ("action_mask", "QUICK_ACTION_MASK_CASES", "masked", 0),
    "action_mask-hybrid_entropy_loss": ("action_mask", "QUICK_ACTION_MASK_CASES", "masked", 1),
    "sub_heads-hybrid_entropy_loss": ("sub_heads", "QUICK_SUB_HEADS_CASES", "sub_heads", 0),
    "sub_heads-log_prob_and_entropy": ("sub_heads", "QUICK_SUB_HEADS_CASES", "sub_heads", 1),
    "parameterized-shared": ("parameterized", "QUICK_PARAMETERIZED_CASES", "parameterized", 0),
    "parameterized-per-sample": ("parameterized", "QUICK_PARAMETERIZED_CASES", "parameterized", 1),
}


@pytest.mark.parametrize("suite, cases, variant, case_index", VARIANT_STEPS.values(), ids=list(VARIANT_STEPS))
def test_a_variant_benchmark_step_gives_the_reference_gradient(suite, cases, variant, case_index):
    import importlib

    module = importlib.import_module(f"hybrid_entropy_ext.benchmarking.{suite}")
    steps = module._steps(getattr(module, cases)[case_index])
    fused, ref = steps[variant](), steps["reference"]()
    for got, want in zip(fused, ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused[0], steps["plain"]()[0])
