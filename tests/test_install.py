"""What the installed package needs and promises.

- The compiled library uses torch's C++ ABI: a package built against one torch refuses to
  import into another, naming both versions and the rebuild command, and its metadata pins
  the torch it was built against.
- The core (the loss, the regularizer, the config) needs torch, numpy and PyYAML only; the
  demo environment, trainer, progress bars and plots are the ``demo`` extra.
- The release library carries no debug information.
- setup.py's choice of CUDA kernels: from the torch build and the toolkit, never from a GPU,
  with ``HEE_CUDA`` to force it either way.
"""

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import venv

import pytest
import torch

import hybrid_entropy_ext as hee

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.dirname(os.path.abspath(hee.__file__))
PUBLIC_TORCH_VERSION = re.sub(r"\+.*$", "", torch.__version__)


def copy_of_package(dest, with_build_info=True):
    """The installed package (Python files and the compiled library) copied to dest."""
    target = os.path.join(dest, "hybrid_entropy_ext")
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    if not with_build_info:
        os.remove(os.path.join(target, "_build_info.py"))
    return dest


def venv_with_stub_torch(path, version):
    """A fresh virtual environment whose `torch` is a stub announcing `version`."""
    venv.EnvBuilder(with_pip=False).create(path)
    python = os.path.join(path, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    os.makedirs(os.path.join(site, "torch"))
    with open(os.path.join(site, "torch", "__init__.py"), "w") as f:
        f.write(f"__version__ = {version!r}\n")
    return python


def import_error(python, pythonpath, *flags):
    # cwd: the first entry of sys.path with -c; not the checkout, whose package would be found first.
    result = subprocess.run([python, *flags, "-c", "import hybrid_entropy_ext"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": pythonpath},
                            cwd=pythonpath.split(os.pathsep)[0])
    assert result.returncode != 0, result.stdout
    return result.stderr.strip().splitlines()[-1]


def test_import_with_another_torch_raises_naming_both_versions_and_the_rebuild(tmp_path):
    python = venv_with_stub_torch(str(tmp_path / "venv"), "2.99.0+cu999")
    message = import_error(python, copy_of_package(str(tmp_path / "pkg")))
    assert message.startswith("ImportError: hybrid_entropy_ext was built against torch "
                              f"{torch.__version__}, but this process has torch 2.99.0+cu999")
    assert "pip install --no-build-isolation" in message
    assert f"torch=={PUBLIC_TORCH_VERSION}" in message


def test_import_with_another_build_of_the_same_torch_version_names_the_build(tmp_path):
    # The metadata's torch==X is met by every build of X: the advice names the build.
    other_build = PUBLIC_TORCH_VERSION + "+cu999"
    python = venv_with_stub_torch(str(tmp_path / "venv"), other_build)
    message = import_error(python, copy_of_package(str(tmp_path / "pkg")))
    assert message.startswith("ImportError: hybrid_entropy_ext was built against torch "
                              f"{torch.__version__}, but this process has torch {other_build}")
    assert message.endswith(f"or install the torch build it was built against ({torch.__version__}, "
                            f"not {other_build}).")


def test_import_of_an_unbuilt_source_tree_says_how_to_build(tmp_path):
    # -S: no site hooks, so an editable install cannot route the import back to the checkout.
    site_packages = os.path.dirname(os.path.dirname(torch.__file__))
    pythonpath = copy_of_package(str(tmp_path), with_build_info=False) + os.pathsep + site_packages
    message = import_error(sys.executable, pythonpath, "-S")
    assert "has not been built" in message and "pip install --no-build-isolation -e ." in message


def test_metadata_pins_the_torch_the_library_was_built_against():
    requirements = importlib.metadata.requires("hybrid_entropy_ext")
    core = [r for r in requirements if "extra ==" not in r]
    assert f"torch=={PUBLIC_TORCH_VERSION}" in [r.replace(" ", "") for r in core]


def test_the_package_version_is_the_one_pyproject_declares():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        assert hee.__version__ == tomllib.load(f)["project"]["version"]


def tracked_files():
    """The checkout's files under version control (skips outside a git checkout, e.g. an sdist)."""
    if shutil.which("git") is None or not os.path.exists(os.path.join(REPO, ".git")):
        pytest.skip("needs a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [name for name in listed.stdout.decode().split("\0") if name]


def test_the_sdist_holds_the_sources_tests_and_license_but_no_build_outputs(tmp_path):
    source = tmp_path / "source"
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(REPO, name), source / name)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=source,
                   env={**os.environ, "HEE_CUDA": "0"}, capture_output=True, check=True)
    (archive,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(archive) as sdist:
        # Each member is under the sdist's top-level folder, hybrid_entropy_ext-<version>/.
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    folders = ("csrc", "tests", "examples", "docs", "benchmarks", "scripts", "hybrid_entropy_ext")
    wanted = {name for name in tracked_files() if name.split("/")[0] in folders}
    wanted |= {"LICENSE", "README.md", "setup.py", "pyproject.toml"}
    assert sorted(wanted - members) == []
    # setup.py wrote the copy's _build_info.py, naming this torch: not for another builder.
    assert "hybrid_entropy_ext/_build_info.py" not in members
    assert [name for name in members if name.endswith((".so", ".o", ".pyc"))] == []


def test_core_requirements_are_torch_numpy_and_pyyaml():
    requirements = importlib.metadata.requires("hybrid_entropy_ext")
    core = {re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in requirements if "extra ==" not in r}
    assert core == {"torch", "numpy", "pyyaml"}


@pytest.mark.parametrize("package", ["gymnasium", "tqdm", "matplotlib"])
def test_demo_packages_come_with_the_demo_extra(package):
    requirements = importlib.metadata.requires("hybrid_entropy_ext")
    assert any(r.lower().startswith(package) and 'extra == "demo"' in r for r in requirements)


def test_the_loss_regularizer_and_config_work_without_the_demo_packages():
    code = textwrap.dedent("""
        import sys
        class NoDemoPackages:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("gymnasium", "tqdm", "matplotlib"):
                    raise ImportError("blocked for the test: " + name)
        sys.meta_path.insert(0, NoDemoPackages())
        import torch
        import hybrid_entropy_ext as hee
        logits, log_std = torch.randn(8, 4, requires_grad=True), torch.zeros(8, 2)
        hee.hybrid_entropy_loss(logits, log_std, 0.01)["total"].backward()
        reg = hee.HybridEntropyRegularizer(hee.EntropyRegularizationConfig.preset("long"))
        print(float(reg(logits, log_std, 10)["current_entropy_coeff"]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(0.1 * (1 - 10 / 500) + 0.001 * 10 / 500)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils")
def test_release_library_carries_no_debug_sections():
    if os.environ.get("HEE_DEBUG", "") not in ("", "0"):
        pytest.skip("built with HEE_DEBUG=1")
    sections = subprocess.run(["readelf", "-S", "-W", hee._ops.library_path()], capture_output=True, text=True,
                              check=True).stdout
    assert ".debug_" not in sections


# --- setup.py's CUDA choice -------------------------------------------------------------


@pytest.fixture
def setup_py(monkeypatch):
    """setup.py as a module (its main() runs only as a script)."""
    spec = importlib.util.spec_from_file_location("hee_setup", os.path.join(REPO, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("HEE_CUDA", raising=False)
    return module


def fake_toolkit(root):
    os.makedirs(os.path.join(root, "include"))
    open(os.path.join(root, "include", "cuda_runtime.h"), "w").close()
    return str(root)


def test_cuda_is_built_for_a_cuda_torch_with_a_toolkit(setup_py, monkeypatch, tmp_path):
    monkeypatch.setattr(setup_py.torch.version, "cuda", "13.0")
    monkeypatch.setattr(setup_py.cpp_extension, "CUDA_HOME", fake_toolkit(tmp_path))
    build, why = setup_py.cuda_choice()
    assert build and "CUDA 13.0" in why


def test_cuda_is_skipped_for_a_cpu_torch(setup_py, monkeypatch, tmp_path):
    monkeypatch.setattr(setup_py.torch.version, "cuda", None)
    monkeypatch.setattr(setup_py.cpp_extension, "CUDA_HOME", fake_toolkit(tmp_path))
    build, why = setup_py.cuda_choice()
    assert not build and "not a CUDA build" in why


def test_cuda_is_skipped_when_the_toolkit_root_has_no_headers(setup_py, monkeypatch, tmp_path):
    # The nvcc on the PATH may be a wrapper script whose parent folder is not the toolkit.
    monkeypatch.setattr(setup_py.torch.version, "cuda", "13.0")
    monkeypatch.setattr(setup_py.cpp_extension, "CUDA_HOME", str(tmp_path))
    build, why = setup_py.cuda_choice()
    assert not build and "has no include/cuda_runtime.h" in why


def test_hee_cuda_0_skips_cuda_even_where_it_could_be_built(setup_py, monkeypatch, tmp_path):
    monkeypatch.setenv("HEE_CUDA", "0")
    monkeypatch.setattr(setup_py.torch.version, "cuda", "13.0")
    monkeypatch.setattr(setup_py.cpp_extension, "CUDA_HOME", fake_toolkit(tmp_path))
    assert setup_py.cuda_choice() == (False, "HEE_CUDA=0")


def test_hee_cuda_1_fails_early_saying_why_cuda_cannot_be_built(setup_py, monkeypatch):
    monkeypatch.setenv("HEE_CUDA", "1")
    monkeypatch.setattr(setup_py.torch.version, "cuda", None)
    monkeypatch.setattr(setup_py.cpp_extension, "CUDA_HOME", None)
    with pytest.raises(SystemExit, match=r"HEE_CUDA=1 but the CUDA kernels cannot be built: torch .* is not a "
                                         r"CUDA build.*no CUDA toolkit found"):
        setup_py.cuda_choice()


def test_hee_cuda_must_be_0_or_1(setup_py, monkeypatch):
    monkeypatch.setenv("HEE_CUDA", "yes")
    with pytest.raises(SystemExit, match=r"HEE_CUDA must be 0, 1 or unset, got 'yes'"):
        setup_py.cuda_choice()


def test_the_abi3_tag_names_the_limited_api_python(setup_py):
    assert setup_py.abi3_tag("0x030A0000") == "cp310"
    assert setup_py.abi3_tag("0x03090000") == "cp39"
    assert setup_py.abi3_tag("0x030D0000") == "cp313"


def test_limited_api_is_the_one_torch_defines_for_extensions(setup_py):
    # BuildExtension defines Py_LIMITED_API as min_supported_cpython; a second,
    # different value would be a redefinition and a wheel tag that lies.
    assert setup_py.PY_LIMITED_API == setup_py.cpp_extension.min_supported_cpython
