"""The three CPU builds of the row kernels: isolated from each other, chosen once.

The AVX2 and AVX-512 translation units include the same headers with different ``-m``
flags. An inline function those headers define (or the shared ``entropy_math.h``
instantiates) is emitted as a weak symbol in each unit that does not inline it, and the
linker keeps one copy for every caller: unless each ISA's copy has a name of its own (the
``CPU_CAPABILITY`` inline namespace), an AVX2 CPU may run AVX-512 code. At ``-O3`` the
functions happen to be inlined; at ``-O0`` and ``-O1`` (the sanitizer build) they are
not, so those builds are what the test disassembles.

The build is chosen once, when the library loads (``HEE_CPU_ISA``,
``ATEN_CPU_CAPABILITY``), and switched by tests through the internal ``_set_cpu_isa``.
"""

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torch.utils import cpp_extension

from hybrid_entropy_ext import _ops
from common_utils import SUPPORTED_CPU_ISAS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X86_64 = os.uname().machine in ("x86_64", "AMD64")

# A symbol is ISA-specific if its name, template arguments included, lies in one of these.
ISA_NAMESPACE = re.compile(r"::(AVX2|AVX512|avx2|avx512)::")
WIDE_REGISTER = re.compile(r"%[yz]mm\d")


def setup_py_isa_flags():
    """setup.py's ISA_SOURCES and ISA_FLAGS, read without running it."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("ISA_SOURCES", "ISA_FLAGS"):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["ISA_SOURCES"], found["ISA_FLAGS"]


def compile_isa_unit(isa, opt_level, out_dir):
    sources, flags = setup_py_isa_flags()
    obj = os.path.join(out_dir, f"{isa}{opt_level}.o")
    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{os.path.join(REPO, 'csrc')}"]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    subprocess.run(
        [os.environ.get("CXX", "g++"), opt_level, "-std=c++20", "-fPIC", "-w", abi, *includes, *flags[isa],
         "-c", os.path.join(REPO, sources[isa]), "-o", obj],
        check=True,
    )
    return obj


def shared_symbols_using_wide_registers(obj):
    """Demangled names of the global and weak functions of `obj` that use ymm/zmm registers."""
    table = subprocess.run(["nm", "--defined-only", obj], capture_output=True, text=True, check=True).stdout
    shared = {parts[2] for parts in map(str.split, table.splitlines()) if len(parts) == 3 and parts[1] in "TWVu"}
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True,
                             check=True).stdout
    wide, current = set(), None
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            current = header.group(1)
        elif current in shared and WIDE_REGISTER.search(line):
            wide.add(current)
    demangled = subprocess.run(["c++filt"], input="\n".join(sorted(wide)), capture_output=True, text=True,
                               check=True).stdout
    return [name for name in demangled.splitlines() if name]


@pytest.mark.skipif(not X86_64 or shutil.which("objdump") is None, reason="x86-64 with binutils only")
@pytest.mark.parametrize("opt_level", ["-O0", "-O1"])
@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_no_shared_symbol_outside_the_isa_namespaces_uses_wide_registers(tmp_path, isa, opt_level):
    obj = compile_isa_unit(isa, opt_level, str(tmp_path))
    wide = shared_symbols_using_wide_registers(obj)
    assert wide, "the check found no AVX code at all: it would pass whatever the build"
    leaking = [name for name in wide if not ISA_NAMESPACE.search(name)]
    assert not leaking, "shared symbols with AVX code outside an ISA namespace:\n" + "\n".join(leaking)


# --- choosing the build ---------------------------------------------------------------


def isa_in_fresh_process(**env):
    """cpu_isa() of a new Python process with `env` set, or the ValueError it raises."""
    code = (
        "from hybrid_entropy_ext import _ops\n"
        "try:\n    print(_ops.cpu_isa())\n"
        "except ValueError as e:\n    print('ValueError:', e)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("HEE_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                            check=True)
    return result.stdout.strip()


WIDEST = SUPPORTED_CPU_ISAS[-1]


def test_without_environment_the_widest_supported_build_is_chosen():
    assert isa_in_fresh_process() == WIDEST


@pytest.mark.parametrize("isa", SUPPORTED_CPU_ISAS)
def test_hee_cpu_isa_forces_a_build_at_load(isa):
    assert isa_in_fresh_process(HEE_CPU_ISA=isa) == isa


def test_unknown_hee_cpu_isa_makes_op_calls_raise_naming_it():
    assert isa_in_fresh_process(HEE_CPU_ISA="sse9") == (
        "ValueError: HEE_CPU_ISA must be one of generic, avx2, avx512; got 'sse9'")


@pytest.mark.parametrize("aten_value, expected", [("default", "generic"), ("avx2", "avx2"), ("avx512", "avx512")])
def test_aten_cpu_capability_caps_the_choice(aten_value, expected):
    if expected not in SUPPORTED_CPU_ISAS:
        expected = WIDEST
    assert isa_in_fresh_process(ATEN_CPU_CAPABILITY=aten_value) == expected


def test_hee_cpu_isa_takes_precedence_over_aten_cpu_capability():
    assert isa_in_fresh_process(HEE_CPU_ISA="generic", ATEN_CPU_CAPABILITY="avx512") == "generic"


def test_environment_changed_after_load_changes_nothing(monkeypatch):
    before = _ops.cpu_isa()
    monkeypatch.setenv("HEE_CPU_ISA", "not-an-isa")
    assert _ops.cpu_isa() == before


def test_set_cpu_isa_rejects_an_unknown_name():
    with pytest.raises(ValueError, match=r"isa must be one of generic, avx2, avx512; got 'sse9'"):
        _ops._set_cpu_isa("sse9")


@pytest.mark.skipif(len(SUPPORTED_CPU_ISAS) == 3, reason="this CPU runs every build")
def test_set_cpu_isa_rejects_a_build_this_cpu_cannot_run():
    missing = next(isa for isa in ("generic", "avx2", "avx512") if isa not in SUPPORTED_CPU_ISAS)
    with pytest.raises(ValueError, match=rf"this CPU does not support '{missing}'"):
        _ops._set_cpu_isa(missing)
