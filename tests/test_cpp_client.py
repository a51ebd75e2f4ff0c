"""The C++ example (examples/cpp): a libtorch program trains a scripted module with the op.

Builds ``train_step`` with CMake against the libtorch of the installed torch
wheel (into a temporary directory), exports the module with
``examples/cpp/export_module.py``, runs 3 SGD steps in C++ (the op library
``dlopen``ed, no Python in the process) and checks the printed losses against
the same 3 steps of the eager module in Python.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hybrid_entropy_ext import _ops

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = REPO / "examples" / "cpp"
STEPS = 3

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")


def _cxx_compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def _load_export_module():
    spec = importlib.util.spec_from_file_location("hee_cpp_example_export_module", EXAMPLE_DIR / "export_module.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def train_step_program(tmp_path_factory):
    """Path of the built train_step executable (built once per test session, outside the repo)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    if _cxx_compiler() is None:
        pytest.skip("no C++ compiler found")
    build_dir = tmp_path_factory.mktemp("cpp_example_build")
    configure = [
        "cmake", "-S", EXAMPLE_DIR, "-B", build_dir,
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DPython3_EXECUTABLE={sys.executable}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    started = time.monotonic()
    _run(configure, timeout=300)
    _run(["cmake", "--build", build_dir], timeout=600)
    print(f"train_step built in {time.monotonic() - started:.1f} s")
    return build_dir / "train_step"


@pytest.fixture
def exported(tmp_path):
    """The directory with policy_loss.pt and inputs.pt, written by export_module.py."""
    out_dir = tmp_path / "exported"
    _run([sys.executable, EXAMPLE_DIR / "export_module.py", out_dir], cwd=tmp_path, timeout=300)
    assert (out_dir / "policy_loss.pt").is_file() and (out_dir / "inputs.pt").is_file()
    return out_dir


def _python_sgd_losses(steps):
    example = _load_export_module()
    module = example.build_module()
    inputs = example.make_inputs()
    optimizer = torch.optim.SGD(module.parameters(), lr=inputs["lr"])
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        total = module(inputs["obs"])["total"]
        total.backward()
        optimizer.step()
        losses.append(total.item())
    return losses


def _parse_losses(stdout):
    matches = re.findall(r"^step (\d+) loss (\S+)$", stdout, flags=re.MULTILINE)
    assert [int(step) for step, _ in matches] == list(range(len(matches))), stdout
    return [float(loss) for _, loss in matches]


def test_cpp_program_trains_scripted_module_like_python(train_step_program, exported):
    proc = _run([train_step_program, _ops.library_path(), exported / "policy_loss.pt", STEPS], timeout=300)

    cpp_losses = _parse_losses(proc.stdout)
    python_losses = _python_sgd_losses(STEPS)

    assert len(cpp_losses) == STEPS, proc.stdout
    assert cpp_losses == pytest.approx(python_losses, rel=1e-5, abs=1e-7)
    # The steps changed the parameters (backward ran and produced gradients).
    assert len(set(cpp_losses)) == STEPS, cpp_losses


def test_cpp_program_reports_an_unloadable_op_library(train_step_program, exported, tmp_path):
    bogus = tmp_path / "not_a_library.so"
    bogus.write_text("not an ELF file")

    proc = subprocess.run(
        [str(train_step_program), str(bogus), str(exported / "policy_loss.pt"), "1"],
        capture_output=True, text=True, timeout=300,
    )

    assert proc.returncode != 0
    assert "cannot load the op library" in proc.stderr
    assert "step" not in proc.stdout


def test_exported_program_reloads_and_matches_eager_at_another_batch_size(exported):
    # The torch.export deployment path: the saved program, reloaded (the op library is
    # loaded by the import above), runs at a batch size it was not traced with.
    example = _load_export_module()
    program = torch.export.load(str(exported / example.EXPORTED_FILE))
    obs = torch.randn(example.BATCH + 5, example.OBS_DIM, generator=torch.Generator().manual_seed(3))
    got = program.module()(obs)
    want = example.build_module()(obs)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-7)
