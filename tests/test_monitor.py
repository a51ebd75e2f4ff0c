"""``hee.EntropyMonitor``: what a record reads, the penalty's interventions, the files it writes."""

import csv
import json
import logging
import math
import sys

import pytest
import torch

import hybrid_entropy_ext as hee

LONG = hee.EntropyRegularizationConfig.preset("long")  # thresholds 0.1 on both heads


def step(discrete_entropy, discrete_penalty=0.0, continuous_entropy=1.5, continuous_penalty=0.0):
    """An output dict as the regularizer returns it (0-dim tensors)."""
    values = {
        "total": discrete_penalty + continuous_penalty - 0.01 * (discrete_entropy + continuous_entropy),
        "discrete": -0.01 * discrete_entropy,
        "continuous": -0.01 * continuous_entropy,
        "discrete_penalty": discrete_penalty,
        "continuous_penalty": continuous_penalty,
        "discrete_entropy": discrete_entropy,
        "continuous_entropy": continuous_entropy,
        "current_entropy_coeff": 0.01,
    }
    return {key: torch.tensor(value, dtype=torch.float64) for key, value in values.items()}


class Untouchable(dict):
    """An output whose values must not be read."""

    def __getitem__(self, key):
        raise AssertionError(f"read {key!r} on a skipped step")

    def __contains__(self, key):
        raise AssertionError(f"looked up {key!r} on a skipped step")


class RecordingWriter:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, value, step))


def test_record_returns_the_step_as_floats():
    row = hee.EntropyMonitor(LONG).record(step(0.5, 0.0), episode=7)
    assert row["episode"] == 7
    assert row["discrete_entropy"] == 0.5 and row["current_entropy_coeff"] == 0.01
    assert all(type(value) is float for key, value in row.items() if key != "episode")


def test_episode_defaults_to_the_number_of_calls_before():
    monitor = hee.EntropyMonitor(LONG)
    assert [monitor.record(step(0.5))["episode"] for _ in range(3)] == [0, 1, 2]


@pytest.fixture
def host_reads(monkeypatch):
    """The shapes of the tensors read with ``.tolist()``; any other host read of a tensor
    (``item``, ``float``, ``int``, ``index``) fails the test."""
    reads = []
    original_tolist = torch.Tensor.tolist

    def counting_tolist(self):
        reads.append(self.shape)
        return original_tolist(self)

    def forbidden(self, *args):
        raise AssertionError("a host read other than the one .tolist()")

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    for name in ("item", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    return reads


def test_record_reads_all_values_with_one_tolist_and_nothing_else(host_reads):
    hee.EntropyMonitor(LONG).record(step(0.5))
    assert host_reads == [torch.Size([8])]


def test_every_n_records_steps_0_n_2n_and_leaves_the_others_untouched():
    monitor = hee.EntropyMonitor(LONG, every=3)
    rows = [monitor.record(step(0.5) if i % 3 == 0 else Untouchable(), episode=i) for i in range(7)]
    assert [row["episode"] for row in rows if row is not None] == [0, 3, 6]
    assert rows[1] is None and monitor.calls == 7 and len(monitor.records) == 3


def test_interventions_count_switch_ons_and_active_steps_count_steps_with_the_penalty():
    monitor = hee.EntropyMonitor(LONG)
    for penalty in (0.0, 0.1, 0.2, 0.0, 0.3, 0.0):
        monitor.record(step(0.05 if penalty else 0.5, penalty))
    summary = monitor.summary()["discrete"]
    assert (summary["interventions"], summary["active_steps"]) == (2, 3)
    assert monitor.summary()["continuous"]["interventions"] == 0


def test_switch_on_is_a_logged_warning_with_entropy_threshold_episode_and_penalty(caplog):
    monitor = hee.EntropyMonitor(LONG)
    with caplog.at_level(logging.WARNING, logger="hybrid_entropy_ext.monitor"):
        monitor.record(step(0.5), episode=99)
        monitor.record(step(0.053, 0.14), episode=100)
        monitor.record(step(0.06, 0.12), episode=101)  # still on: no second warning
    assert [r.getMessage() for r in caplog.records] == [
        "discrete entropy 0.053 < 0.1 at episode 100: collapse penalty 0.140"]
    assert caplog.records[0].levelno == logging.WARNING


def test_continuous_switch_on_names_the_continuous_head(caplog):
    monitor = hee.EntropyMonitor(LONG)
    with caplog.at_level(logging.WARNING, logger="hybrid_entropy_ext.monitor"):
        monitor.record(step(0.5, 0.0, 0.04, 0.18), episode=3)
    assert [r.getMessage() for r in caplog.records] == [
        "continuous entropy 0.040 < 0.1 at episode 3: collapse penalty 0.180"]


def test_without_a_config_the_warning_quotes_no_threshold(caplog):
    with caplog.at_level(logging.WARNING, logger="hybrid_entropy_ext.monitor"):
        hee.EntropyMonitor().record(step(0.053, 0.14), episode=100)
    assert [r.getMessage() for r in caplog.records] == [
        "discrete entropy 0.053 at episode 100: collapse penalty 0.140"]


@pytest.mark.parametrize("head_thresholds", [None, (0.4, 0.5, 0.7)], ids=["min_entropy_threshold", "per sub-head"])
def test_with_sub_heads_the_warning_names_those_below_their_thresholds(caplog, head_thresholds):
    # The penalty acts per sub-head: the summed entropy (1.1 here) is not what fell below.
    config = LONG.replace(discrete_sizes=(2, 1, 3), min_entropy_threshold=0.5,
                          discrete_head_thresholds=head_thresholds)
    out = step(1.1, 1.56)
    out["discrete_entropy_per_head"] = torch.tensor([0.48, 0.0, 0.62], dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="hybrid_entropy_ext.monitor"):
        hee.EntropyMonitor(config).record(out, episode=3)
    below = ("sub-head 0 entropy 0.480 < 0.5, sub-head 1 entropy 0.000 < 0.5" if head_thresholds is None
             else "sub-head 1 entropy 0.000 < 0.5, sub-head 2 entropy 0.620 < 0.7")
    assert [r.getMessage() for r in caplog.records] == [f"discrete {below} at episode 3: collapse penalty 1.560"]


def test_with_sub_heads_a_nan_penalty_warning_lists_every_sub_head(caplog):
    config = LONG.replace(discrete_sizes=(2, 2), min_entropy_threshold=0.5)
    out = step(math.nan, math.nan)
    out["discrete_entropy_per_head"] = torch.tensor([math.nan, 0.6], dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="hybrid_entropy_ext.monitor"):
        hee.EntropyMonitor(config).record(out, episode=2)
    assert [r.getMessage() for r in caplog.records] == [
        "discrete sub-head 0 entropy nan, sub-head 1 entropy 0.600 at episode 2: collapse penalty nan"]


def test_with_sub_heads_the_summary_gives_each_sub_heads_threshold():
    config = LONG.replace(discrete_sizes=(3, 3), min_entropy_threshold=None, discrete_head_thresholds=(0.5, 0.4))
    out = step(1.1, 1.5)
    out["discrete_entropy_per_head"] = torch.tensor([0.001, 1.099], dtype=torch.float64)
    monitor = hee.EntropyMonitor(config, warn=False)
    monitor.record(out)
    assert monitor.summary()["discrete"]["sub_head_thresholds"] == [0.5, 0.4]
    assert "sub_head_thresholds" not in hee.EntropyMonitor(LONG).summary()["discrete"]


def test_a_nan_penalty_counts_as_on_and_is_warned_about(caplog):
    monitor = hee.EntropyMonitor(LONG)
    with caplog.at_level(logging.WARNING, logger="hybrid_entropy_ext.monitor"):
        monitor.record(step(math.nan, math.nan), episode=4)
    assert monitor.summary()["discrete"]["interventions"] == 1
    assert [r.getMessage() for r in caplog.records] == ["discrete entropy nan < 0.1 at episode 4: collapse penalty nan"]


def test_warnings_go_to_the_given_logger(caplog):
    with caplog.at_level(logging.WARNING, logger="my.trainer"):
        hee.EntropyMonitor(LONG, logger=logging.getLogger("my.trainer")).record(step(0.05, 0.15), 1)
    assert [r.name for r in caplog.records] == ["my.trainer"]


def test_summary_keeps_the_minimum_and_mean_entropy_per_head():
    monitor = hee.EntropyMonitor(LONG)
    for discrete, continuous in ((0.5, 2.0), (0.25, 1.0), (1.0, 3.0)):
        monitor.record(step(discrete, continuous_entropy=continuous))
    summary = monitor.summary()
    assert (summary["discrete"]["min_entropy"], summary["discrete"]["mean_entropy"]) == (0.25, 1.75 / 3)
    assert (summary["continuous"]["min_entropy"], summary["continuous"]["mean_entropy"]) == (1.0, 2.0)
    assert summary["records"] == 3 and summary["discrete"]["threshold"] == 0.1


def test_writer_gets_every_recorded_value_at_the_episode():
    writer = RecordingWriter()
    monitor = hee.EntropyMonitor(LONG, writer=writer, tag="reg")
    monitor.record(step(0.5), episode=40)
    assert ("reg/discrete_entropy", 0.5, 40) in writer.calls
    assert {tag for tag, _, _ in writer.calls} == {f"reg/{key}" for key in step(0.5)}
    assert {s for _, _, s in writer.calls} == {40}


def test_plain_numbers_are_recorded_without_tensors():
    row = hee.EntropyMonitor(LONG).record({"discrete_entropy": 0.3, "discrete_penalty": 0}, episode=1)
    assert row == {"episode": 1, "discrete_penalty": 0.0, "discrete_entropy": 0.3}


def test_records_the_regularizers_output_with_per_head_coefficients():
    regularizer = hee.HybridEntropyRegularizer(
        LONG, discrete_controller=hee.TargetEntropyController(0.5, "adaptive", initial_coeff=0.02))
    row = hee.EntropyMonitor(regularizer).record(regularizer(torch.randn(8, 4), torch.zeros(2), 250), 250)
    assert row["discrete_entropy_coeff"] == pytest.approx(0.02, rel=1e-6)
    assert row["continuous_entropy_coeff"] == pytest.approx(0.0505, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"every": 0}, ValueError, r"every: expected an integer >= 1, got 0"),
        ({"every": 2.0}, TypeError, r"every: expected an integer"),
        ({"writer": object()}, TypeError, r"writer: expected an object with add_scalar\(tag, value, step\)"),
        ({"config": {"min_entropy_threshold": 0.1}}, TypeError, r"config: expected an EntropyRegularizationConfig"),
    ],
)
def test_bad_argument_is_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        hee.EntropyMonitor(**kwargs)


def test_value_that_is_not_a_number_is_named():
    with pytest.raises(TypeError, match=r"out\['total'\]: expected a 0-dim tensor or a number, got 'x'"):
        hee.EntropyMonitor().record({"total": "x"})


# --- files --------------------------------------------------------------------------------


def _filled_monitor():
    monitor = hee.EntropyMonitor(LONG)
    monitor.record(step(0.5), episode=0)
    monitor.record(step(0.05, 0.15), episode=8)
    return monitor


def test_csv_has_one_row_per_record_with_the_episode_first(tmp_path):
    path = _filled_monitor().to_csv(tmp_path / "entropy.csv")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames[0] == "episode" and len(rows) == 2
    assert [int(r["episode"]) for r in rows] == [0, 8]
    assert float(rows[1]["discrete_penalty"]) == 0.15


def test_json_holds_the_summary_and_the_records(tmp_path):
    monitor = _filled_monitor()
    document = json.loads(monitor.to_json(tmp_path / "entropy.json").read_text())
    assert document["summary"]["discrete"]["interventions"] == 1
    assert document["records"] == monitor.records


def test_plot_png_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = _filled_monitor().plot_png(tmp_path / "entropy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_png_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    with pytest.raises(ImportError, match=r'pip install "\.\[demo\]"'):
        _filled_monitor().plot_png(tmp_path / "entropy.png")


def test_warn_false_counts_switch_ons_without_logging_them(caplog):
    monitor = hee.EntropyMonitor(LONG, warn=False)
    with caplog.at_level(logging.WARNING):
        monitor.record(step(0.05, 0.15), 1)
    assert caplog.records == [] and monitor.interventions["discrete"] == 1


def test_json_writes_a_nan_run_as_standard_json_with_null(tmp_path):
    monitor = hee.EntropyMonitor(LONG)
    monitor.record(step(0.5), episode=0)
    monitor.record(step(float("nan"), continuous_entropy=float("inf")), episode=8)
    path = monitor.to_json(tmp_path / "entropy.json")

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    document = json.loads(path.read_text(), parse_constant=refuse)
    assert document["records"][1]["discrete_entropy"] is None
    assert document["records"][1]["continuous_entropy"] is None
    assert document["records"][1]["total"] is None  # nan as well
    assert document["records"][0] == monitor.records[0]


def test_summary_with_a_nan_entropy_is_written_as_null(tmp_path):
    monitor = hee.EntropyMonitor(LONG)
    monitor.record(step(float("nan")), episode=0)
    document = json.loads(monitor.to_json(tmp_path / "entropy.json").read_text())
    assert document["summary"]["discrete"]["mean_entropy"] is None


# --- heads the policy does not have ------------------------------------------------------


def _discrete_only_monitor(**kwargs):
    regularizer = hee.HybridEntropyRegularizer(LONG)
    monitor = hee.EntropyMonitor(regularizer, **kwargs)
    for episode in range(3):
        monitor.record(regularizer(torch.randn(8, 4), None, episode), episode)
    return monitor


def test_a_head_the_policy_does_not_have_is_reported_absent_not_as_entropy_0():
    summary = _discrete_only_monitor().summary()
    assert summary["discrete"]["present"] is True and summary["discrete"]["min_entropy"] > 0.0
    assert summary["continuous"]["present"] is False
    assert summary["continuous"]["min_entropy"] is None and summary["continuous"]["mean_entropy"] is None


def test_an_absent_head_is_left_out_of_the_csv_and_json(tmp_path):
    monitor = _discrete_only_monitor()
    with open(monitor.to_csv(tmp_path / "entropy.csv"), newline="") as handle:
        columns = csv.DictReader(handle).fieldnames
    assert not [column for column in columns if column.startswith("continuous")]
    assert "discrete_entropy" in columns
    document = json.loads(monitor.to_json(tmp_path / "entropy.json").read_text())
    assert not [key for row in document["records"] for key in row if key.startswith("continuous")]
    assert document["summary"]["continuous"]["present"] is False


def test_an_absent_head_is_not_plotted(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    drawn = []
    original = Figure.savefig

    def capture(self, *args, **kwargs):
        drawn.extend(line.get_label() for ax in self.axes for line in ax.get_lines())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    _discrete_only_monitor().plot_png(tmp_path / "entropy.png")
    assert "discrete_entropy" in drawn and "discrete threshold" in drawn
    assert not [label for label in drawn if label.startswith("continuous")]


def test_a_head_with_a_collapsed_entropy_and_a_penalty_is_present():
    # Entropy exactly 0 is a collapse, not a missing head, when the penalty (or the term) says so.
    monitor = hee.EntropyMonitor(LONG)
    monitor.record(step(0.0, 0.3), episode=0)
    assert monitor.summary()["discrete"]["present"] is True
    assert monitor.summary()["discrete"]["min_entropy"] == 0.0


def test_given_heads_leave_the_other_head_unread_and_unrecorded():
    out = step(0.5)
    for key in ("continuous", "continuous_penalty", "continuous_entropy"):
        out[key] = torch.empty((), device="meta")  # reading it would raise
    row = hee.EntropyMonitor(LONG, heads=["discrete"]).record(out, episode=2)
    assert not [key for key in row if key.startswith("continuous")]
    assert row["discrete_entropy"] == 0.5


def test_given_heads_mark_the_other_absent_even_before_any_record():
    summary = hee.EntropyMonitor(LONG, heads=("continuous",)).summary()
    assert (summary["discrete"]["present"], summary["continuous"]["present"]) == (False, True)


@pytest.mark.parametrize(
    "heads, error, message",
    [("discrete", TypeError, r"heads: expected None or a list"), (["policy"], ValueError, r"got 'policy'"),
     ([], ValueError, r"at least one"), (["discrete", "discrete"], ValueError, r"each once")],
)
def test_bad_heads_are_named(heads, error, message):
    with pytest.raises(error, match=message):
        hee.EntropyMonitor(heads=heads)


# --- a rejected record changes nothing --------------------------------------------------------


@pytest.mark.parametrize(
    "out, episode, error",
    [({"total": "x"}, 0, TypeError), ({"total": torch.zeros(2)}, 0, TypeError), (step(0.5), -1, ValueError),
     (step(0.5), 1.5, TypeError), (step(0.5), torch.tensor(-3), ValueError), (step(0.5), torch.tensor(2.0), TypeError)],
)
def test_a_rejected_record_is_not_counted(out, episode, error):
    monitor = hee.EntropyMonitor(LONG, every=2)
    with pytest.raises(error):
        monitor.record(out, episode)
    assert monitor.calls == 0 and monitor.records == []
    assert monitor.record(step(0.5), 4)["episode"] == 4  # still step 0: recorded, not skipped
    assert monitor.calls == 1


def test_a_bad_episode_on_a_skipped_step_is_rejected_and_not_counted():
    monitor = hee.EntropyMonitor(LONG, every=2)
    monitor.record(step(0.5), 0)
    with pytest.raises(ValueError):
        monitor.record(Untouchable(), -1)
    assert monitor.calls == 1


# --- the episode as a 0-dim integer tensor -----------------------------------------------------


def test_episode_counter_tensor_is_read_with_the_values_in_one_tolist(host_reads):
    regularizer = hee.HybridEntropyRegularizer(LONG)
    regularizer.step(2**24 + 1)  # not a float32 number: read exactly
    row = hee.EntropyMonitor(LONG).record(step(0.5), episode=regularizer.episode_counter)
    assert host_reads == [torch.Size([9])]
    assert row["episode"] == 2**24 + 1 and type(row["episode"]) is int
    assert row["discrete_entropy"] == 0.5


def test_episode_tensor_alone_is_one_read():
    row = hee.EntropyMonitor().record({"discrete_entropy": 0.25}, episode=torch.tensor(7, dtype=torch.int32))
    assert row == {"episode": 7, "discrete_entropy": 0.25}


def test_episode_tensor_is_not_read_on_skipped_steps():
    monitor = hee.EntropyMonitor(LONG, every=2)
    monitor.record(step(0.5), episode=torch.tensor(0))
    # A meta tensor has no value: reading it would raise. Only its metadata is checked.
    assert monitor.record(Untouchable(), episode=torch.zeros((), dtype=torch.int64, device="meta")) is None
    assert monitor.calls == 2 and len(monitor.records) == 1


def test_regularizer_counter_as_the_episode():
    regularizer = hee.HybridEntropyRegularizer(LONG)
    monitor = hee.EntropyMonitor(regularizer)
    for _ in range(3):
        monitor.record(regularizer(torch.randn(8, 4), torch.zeros(2)), regularizer.episode_counter)
        regularizer.step(8)
    assert [row["episode"] for row in monitor.records] == [0, 8, 16]
