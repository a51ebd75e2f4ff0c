"""The README's sections on schedules, controllers, distributions, multi-GPU and monitoring,
on per-token terms and on the integrations: every Python example in them runs as written, each in a fresh
namespace, in a fresh process."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Schedules, target-entropy control, distributions, multi-GPU, monitoring"
TOKEN_TERMS_SECTION = "## Per-token terms (LLM RL, recurrent policies)"

RUNNER = textwrap.dedent(
    """
    import json, sys
    for i, block in enumerate(json.load(open(sys.argv[1]))):
        print(f"--- block {i}", flush=True)
        exec(compile(block, f"README block {i}", "exec"), {"__name__": "__main__"})
    """
)


def section_blocks(section=SECTION):
    text = README.read_text(encoding="utf-8")
    start = text.index(section)
    end = text.index("\n## ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def run_blocks(blocks, cwd, env=None):
    """Runs the blocks in a fresh process, each in a fresh namespace, from cwd."""
    blocks_path = cwd / "blocks.json"
    blocks_path.write_text(json.dumps(blocks))
    return subprocess.run([sys.executable, "-c", RUNNER, str(blocks_path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_section_has_an_example_for_each_feature():
    # schedules, the counter, controllers, distributions, the plain term, multi-GPU, monitoring
    assert len(section_blocks()) == 7


def test_every_example_of_the_section_runs(tmp_path):
    pytest.importorskip("matplotlib")  # the monitoring example draws its PNG
    # What torchrun sets, for a world of one process.
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    proc = run_blocks(section_blocks(), tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0.0505 0.01 0.0255" in proc.stdout  # the schedules' printed values, as the comment says
    for name in ("regularizer.pt", "entropy.csv", "entropy.json", "entropy.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_every_example_of_the_per_token_section_runs(tmp_path):
    # The first block is the two-pass form the op replaces, written for reading (its
    # names come from the reader's trainer); the others (the GRPO loss, the recurrent
    # policy, the action mask, the multi-discrete policy) run as written.
    blocks = section_blocks(TOKEN_TERMS_SECTION)
    assert len(blocks) == 5
    proc = run_blocks(blocks[1:], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


INTEGRATIONS_SECTION = "## Integrations: Stable-Baselines3, sb3-contrib, TorchRL, TRL, verl"


def test_every_example_of_the_integrations_section_runs(tmp_path):
    # The `py` block (apply_to_trl / apply_to_verl) needs TRL and verl installed; the same
    # calls are tested where they import (test_integration_trl.py, test_integration_verl.py).
    # The others need Stable-Baselines3, sb3-contrib and TorchRL, which the [test] extra
    # installs.
    blocks = section_blocks(INTEGRATIONS_SECTION)
    assert len(blocks) == 5
    proc = run_blocks(blocks, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
