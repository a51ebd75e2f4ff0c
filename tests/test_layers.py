"""The package's layers import downwards only, and no private name crosses a module.

Layers, lowest first: the internal modules (``_ops``, the compiled library's loader;
``_validation``, the shared checks) -> ``ops`` -> ``regularization`` -> ``integrations`` ->
the application: ``benchmarking``, then ``app`` (whose CLI runs the benchmarks). A module
may import its own layer and those below.
Read from the source with ``ast``, lazy imports inside functions included.
"""

import ast
import pathlib

import pytest

PACKAGE = "hybrid_entropy_ext"
ROOT = pathlib.Path(__file__).resolve().parent.parent / PACKAGE

RANK = {"_internal": 0, "ops": 1, "regularization": 2, "integrations": 3, "benchmarking": 4, "app": 5}
INTERNAL = ("_ops", "_validation", "_C", "_build_info")
SUBPACKAGES = ("ops", "regularization", "integrations", "benchmarking", "app")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def exists(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or name.endswith("._C")


def imports(path: pathlib.Path):
    """``(module imported, name imported or None)`` for every import of the package's modules."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] == PACKAGE:
                for alias in node.names:
                    yield source, alias.name


def layer(name: str):
    """The layer of a module of the package, ``"top"`` for the package's ``__init__`` and
    its compatibility aliases (which import everything), None for a name outside it."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return "top"
    if parts[1] in INTERNAL:
        return "_internal"
    return parts[1] if parts[1] in SUBPACKAGES else "top"


MODULES = sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_subpackage_is_found():
    found = {layer(module_name(p)) for p in MODULES}
    assert set(SUBPACKAGES) <= found


@pytest.mark.parametrize("path", [p for p in MODULES if layer(module_name(p)) in RANK],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    own = layer(module_name(path))
    for source, name in imports(path):
        target = f"{source}.{name}" if name is not None and exists(f"{source}.{name}") else source
        theirs = layer(target)
        assert theirs != "top", f"{path.name} imports {target}: the package's __init__ or an alias module"
        assert RANK[theirs] <= RANK[own], f"{module_name(path)} ({own}) imports {target} ({theirs}), a layer above"


def library_imports(path):
    """The modules ``path`` imports, through the package's own compatibility modules (a
    top-level module such as reference.py counts as what it imports)."""
    for source, name in imports(path):
        target = f"{source}.{name}" if name is not None and exists(f"{source}.{name}") else source
        if layer(target) == "top" and target != PACKAGE:
            yield from library_imports(ROOT / (target.split(".", 1)[1].replace(".", "/") + ".py"))
        else:
            yield target


def test_the_package_init_imports_no_application():
    for target in library_imports(ROOT / "__init__.py"):
        assert layer(target) in ("_internal", "ops", "regularization"), target


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_is_imported_from_another_module(path):
    # The internal modules themselves (`from .. import _ops`) are the layer below; a name
    # with a leading underscore inside any module stays in that module.
    for source, name in imports(path):
        if name is None or not name.startswith("_"):
            continue
        assert exists(f"{source}.{name}") and name in INTERNAL, (
            f"{module_name(path)} imports the private name {name} from {source}")
