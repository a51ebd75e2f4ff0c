"""The ``hybrid-entropy`` command line: help, outputs, one-line errors, a tiny training run."""

import csv
import subprocess
import sys

import pytest

from hybrid_entropy_ext.app.cli import main

SUBCOMMANDS = ("schedule", "check", "bench", "train", "demo")


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``main(argv)``, SystemExit included."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_exits_0(capsys, command):
    status, out, _ = run_cli(capsys, *([command] if command else []), "--help")
    assert status == 0
    assert "usage: hybrid-entropy" in out
    if command == "train":
        for option in ("--config", "--preset", "--episodes", "--seed", "--out"):
            assert option in out


def test_schedule_long_preset(capsys):
    status, out, _ = run_cli(capsys, "schedule", "--preset", "long", "--episodes", "0", "250", "500")
    assert status == 0
    assert "| 0 | 0.1 |" in out
    assert "| 250 | 0.0505 |" in out
    assert "| 500 | 0.001 |" in out


def test_check_reports_active_discrete_penalty(capsys):
    status, out, _ = run_cli(
        capsys, "check", "--preset", "long", "--episode", "300", "--discrete-entropy", "0.05",
        "--continuous-entropy", "1.2",
    )
    assert status == 0
    assert "discrete: COLLAPSING" in out and "penalty active" in out
    assert "| discrete_penalty | 0.15 |" in out  # 3 * (0.1 - 0.05)
    assert "continuous: ok" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("schedule", "--preset", "bogus"),
        ("train", "--preset", "bogus", "--episodes", "8"),
        ("schedule", "--config", "does/not/exist.yaml"),
        ("train", "--config", "does/not/exist.yaml", "--episodes", "8"),
        ("check", "--episode", "-1", "--discrete-entropy", "0.1", "--continuous-entropy", "0.1"),
        ("train", "--episodes", "0"),
        ("train", "--episodes", "8", "--seed", "-1"),
        ("demo", "--train-episodes", "-1"),
        ("schedule", "--config", "x.yaml", "--preset", "long"),
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, argv):
    status, out, err = run_cli(capsys, *argv)
    assert_one_line_error(status, err)
    assert out == ""


# Not read as YAML text: "missing.cfg" would parse as a string and fail as "not a mapping".
def test_a_missing_config_file_of_any_name_is_not_found(capsys):
    status, out, err = run_cli(capsys, "schedule", "--config", "missing.cfg")
    assert_one_line_error(status, err)
    assert "No such file" in err and "missing.cfg" in err


@pytest.mark.parametrize(
    "yaml_text, named",
    [("target_entropy_control: adaptive\ndiscrete_target_entropy: 0.5\n", "target_entropy_control"),
     ("discrete_sizes: [3, 3]\ndiscrete_head_thresholds: [0.5, 0.5]\n", "discrete_sizes")],
    ids=["controller", "sub-heads"],
)
def test_check_refuses_a_config_whose_terms_two_entropies_do_not_give(capsys, tmp_path, yaml_text, named):
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    status, out, err = run_cli(capsys, "check", "--config", str(config), "--episode", "0",
                               "--discrete-entropy", "1.0", "--continuous-entropy", "1.2")
    assert_one_line_error(status, err)
    assert named in err and out == ""


def test_options_without_a_subcommand_go_to_the_default_demo(monkeypatch):
    from hybrid_entropy_ext.app import cli

    calls = []
    monkeypatch.setattr(cli, "cmd_demo", calls.append)
    assert cli.main(["--preset", "short", "--train-episodes", "0"]) == 0
    assert [(args.command, args.preset, args.train_episodes) for args in calls] == [("demo", "short", 0)]


def test_invalid_yaml_is_a_one_line_error(capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("entropy_regularization: [\n")
    status, out, err = run_cli(capsys, "schedule", "--config", str(config))
    assert_one_line_error(status, err)
    assert "invalid YAML" in err


def test_a_section_with_every_key_commented_out_is_the_defaults(capsys, tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("entropy_regularization:\n  # entropy_coeff_start: 0.5\n")
    status, out, _ = run_cli(capsys, "schedule", "--config", str(config), "--episodes", "0")
    assert status == 0 and "| 0 | 0.1 |" in out


def test_bad_config_value_names_the_key(capsys, tmp_path):
    config = tmp_path / "trainer.yaml"
    config.write_text("trainer:\n  entropy_regularization:\n    entropy_coef: 0.1\n")
    status, _, err = run_cli(capsys, "train", "--config", str(config), "--episodes", "8")
    assert_one_line_error(status, err)
    assert "entropy_coef" in err and "entropy_coeff" in err


def test_missing_config_file_in_a_fresh_process():
    # The real entry point: one line on stderr, exit status 2, no traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "hybrid_entropy_ext", "train", "--config", "missing.yaml", "--episodes", "8"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "missing.yaml" in proc.stderr


def test_train_tiny_run(capsys, tmp_path):
    config = tmp_path / "trainer.yaml"
    config.write_text("trainer:\n  entropy_regularization:\n    entropy_coeff_start: 0.05\n")
    out_dir = tmp_path / "run"
    status, out, _ = run_cli(
        capsys, "train", "--config", str(config), "--episodes", "16", "--seed", "1", "--out", str(out_dir), "--quiet"
    )
    assert status == 0
    assert "final return" in out and "| episodes | mean return |" in out
    with open(out_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["episodes"]) for r in rows] == [8, 16]
    assert float(rows[0]["entropy_coeff"]) == pytest.approx(0.05 * (1 - 8 / 500) + 0.001 * 8 / 500)
    assert (out_dir / "training.png").stat().st_size > 0


def test_bench_prints_the_speed_up_table_and_with_thread_scaling_the_thread_table(capsys, tmp_path):
    import json

    path = tmp_path / "bench.json"
    status, out, _ = run_cli(
        capsys, "bench", "--sizes", "8x3", "--implementations", "fused", "reference", "--rounds", "1",
        "--thread-scaling", "--json", str(path),
    )
    assert status == 0
    assert "| 8x3 |" in out
    assert "| 65536x64 | forward+backward |" in out and "1t / 2t" in out
    document = json.loads(path.read_text())
    assert {r["case"] for r in document["results"]} == {"8x3"}
    assert {r["case"] for r in document["thread_scaling"]} == {"65536x64 1t", "65536x64 2t"}


def test_train_writes_the_entropy_monitor_outputs_into_the_run_folder(capsys, tmp_path):
    import json

    out_dir = tmp_path / "run"
    status, out, _ = run_cli(
        capsys, "train", "--preset", "long", "--episodes", "16", "--seed", "1", "--out", str(out_dir), "--quiet"
    )
    assert status == 0
    assert "discrete head: collapse penalty (threshold 0.1) switched on 0 times" in out
    with open(out_dir / "entropy_monitor.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # One row per minibatch step: 2 updates x 8 epochs x 4 minibatches.
    assert len(rows) == 64 and {int(r["episode"]) for r in rows} == {8, 16}
    summary = json.loads((out_dir / "entropy_monitor.json").read_text())["summary"]
    assert summary["records"] == 64
    assert (out_dir / "entropy_monitor.png").read_bytes()[:4] == b"\x89PNG"


def test_train_logs_a_warning_when_a_penalty_switches_on(capsys, caplog, tmp_path):
    import logging

    config = tmp_path / "trainer.yaml"
    config.write_text("min_entropy_threshold: 5.0\ncontinuous_min_entropy_threshold: null\n")  # on at once
    with caplog.at_level(logging.WARNING, logger="hybrid_entropy_ext.monitor"):
        status, out, _ = run_cli(capsys, "train", "--config", str(config), "--episodes", "8")
    assert status == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "hybrid_entropy_ext.monitor"]
    assert len(messages) == 1 and messages[0].startswith("discrete entropy ")
    assert " < 5 at episode 8: collapse penalty " in messages[0]
    assert "discrete head: collapse penalty (threshold 5) switched on 1 time, active in 32 of 32 steps" in out


def _head_summary(interventions, active_steps, present=True):
    return {"present": present, "min_entropy": 0.05 if present else None, "mean_entropy": 0.2 if present else None,
            "interventions": interventions, "active_steps": active_steps, "threshold": 0.1}


def test_monitor_report_counts_in_singular_and_plural():
    from hybrid_entropy_ext.app.cli import monitor_report

    report = monitor_report({"records": 1, "discrete": _head_summary(1, 1), "continuous": _head_summary(2, 0)})
    assert report.splitlines() == [
        "discrete head: collapse penalty (threshold 0.1) switched on 1 time, active in 1 of 1 step; "
        "entropy min 0.050, mean 0.200 nats",
        "continuous head: collapse penalty (threshold 0.1) switched on 2 times, active in 0 of 1 step; "
        "entropy min 0.050, mean 0.200 nats",
    ]


def test_monitor_report_gives_the_sub_heads_thresholds():
    from hybrid_entropy_ext.app.cli import monitor_report

    discrete = {**_head_summary(1, 1), "threshold": None, "sub_head_thresholds": [0.5, 0.4]}
    report = monitor_report({"records": 1, "discrete": discrete, "continuous": _head_summary(0, 0, present=False)})
    assert report.splitlines()[0].startswith(
        "discrete head: collapse penalty (per sub-head thresholds 0.5, 0.4) switched on 1 time")


def test_monitor_report_says_a_missing_head_is_absent():
    from hybrid_entropy_ext.app.cli import monitor_report

    # A purely discrete policy: summary() marks the continuous head absent (tests/test_monitor.py).
    summary = {"records": 3, "discrete": _head_summary(0, 0), "continuous": _head_summary(0, 0, present=False)}
    assert monitor_report(summary).splitlines() == [
        "discrete head: collapse penalty (threshold 0.1) switched on 0 times, active in 0 of 3 steps; "
        "entropy min 0.050, mean 0.200 nats",
        "continuous head: absent (the policy has no continuous head)",
    ]


def test_train_quiet_logs_no_penalty_warning(capsys, caplog, tmp_path):
    import logging

    config = tmp_path / "trainer.yaml"
    config.write_text("min_entropy_threshold: 5.0\n")
    with caplog.at_level(logging.WARNING):
        status, _, _ = run_cli(capsys, "train", "--config", str(config), "--episodes", "8", "--quiet")
    assert status == 0
    assert not [r for r in caplog.records if "collapse penalty" in r.getMessage()]


def test_plain_preset_is_offered(capsys):
    status, out, _ = run_cli(capsys, "schedule", "--preset", "plain", "--episodes", "0", "1000")
    assert status == 0 and "| 0 | 0.01 |" in out and "| 1000 | 0.01 |" in out
