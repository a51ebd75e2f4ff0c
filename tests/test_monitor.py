"""``hee.EntropyMonitor``: what a record reads, the penalty's interventions, the files it writes."""

import csv
import json
import logging
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


def test_record_reads_all_values_with_one_tolist_and_nothing_else(monkeypatch):
    reads = []
    original_tolist = torch.Tensor.tolist

    def counting_tolist(self):
        reads.append(self.shape)
        return original_tolist(self)

    def forbidden(self, *args):
        raise AssertionError("a per-value host read")

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    monkeypatch.setattr(torch.Tensor, "__float__", forbidden)
    hee.EntropyMonitor(LONG).record(step(0.5))
    assert reads == [torch.Size([8])]


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
