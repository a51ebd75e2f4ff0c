"""The README's section on schedules, controllers, distributions, multi-GPU and monitoring:
every Python example in it runs as written, each in a fresh namespace, in a fresh process."""

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

RUNNER = textwrap.dedent(
    """
    import json, sys
    for i, block in enumerate(json.load(open(sys.argv[1]))):
        print(f"--- block {i}", flush=True)
        exec(compile(block, f"README block {i}", "exec"), {"__name__": "__main__"})
    """
)


def section_blocks():
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_section_has_an_example_for_each_feature():
    # schedules, the counter, controllers, distributions, the plain term, multi-GPU, monitoring
    assert len(section_blocks()) == 7


def test_every_example_of_the_section_runs(tmp_path):
    pytest.importorskip("matplotlib")  # the monitoring example draws its PNG
    import json

    blocks_path = tmp_path / "blocks.json"
    blocks_path.write_text(json.dumps(section_blocks()))
    # What torchrun sets, for a world of one process.
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(blocks_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0.0505 0.01 0.0255" in proc.stdout  # the schedules' printed values, as the comment says
    for name in ("regularizer.pt", "entropy.csv", "entropy.json", "entropy.png"):
        assert (tmp_path / name).stat().st_size > 0, name
