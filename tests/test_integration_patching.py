"""``hybrid_entropy_ext.integrations.patching``: how the integrations put their functions in a
library's place. Held on a small package written for the test: a helper module, and a
trainer module that binds the helper by name at import, as TRL's and verl's do."""

import sys
import textwrap

import pytest

from hybrid_entropy_ext.integrations.patching import patch_functions


@pytest.fixture
def library(tmp_path, monkeypatch):
    package = tmp_path / "toylib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "utils.py").write_text("def entropy(x):\n    return 'theirs'\n\nalias = entropy\n")
    (package / "trainer.py").write_text(
        textwrap.dedent(
            """
            from .utils import entropy
            from . import utils

            def step(x):
                return entropy(x), utils.entropy(x)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import toylib.trainer
    import toylib.utils

    yield toylib
    for name in [key for key in sys.modules if key == "toylib" or key.startswith("toylib.")]:
        del sys.modules[name]


def ours(x):
    return "ours"


def test_the_defining_module_and_every_name_bound_to_the_function_are_replaced(library):
    patches = patch_functions({"toylib.utils": {"entropy": ours}})
    assert library.trainer.step(0) == ("ours", "ours")
    assert library.utils.alias is ours
    assert sorted(patches.replaced) == [
        ("toylib.trainer", "entropy"),
        ("toylib.utils", "alias"),
        ("toylib.utils", "entropy"),
    ]


def test_undo_restores_every_binding(library):
    original = library.utils.entropy
    patches = patch_functions({"toylib.utils": {"entropy": ours}})
    patches.undo()
    assert library.trainer.step(0) == ("theirs", "theirs")
    assert library.utils.alias is original


def test_a_module_imported_after_the_patch_binds_the_replacement(library, tmp_path):
    (tmp_path / "toylib" / "late.py").write_text("from .utils import entropy\n")
    with patch_functions({"toylib.utils": {"entropy": ours}}):
        import toylib.late

        assert toylib.late.entropy is ours


def test_undo_restores_the_name_a_module_imported_during_the_patch_bound(library, tmp_path):
    original = library.utils.entropy
    (tmp_path / "toylib" / "late.py").write_text("from .utils import entropy\n")
    with patch_functions({"toylib.utils": {"entropy": ours}}):
        import toylib.late
    assert toylib.late.entropy is original


def test_patches_undone_in_reverse_order_restore_the_originals(library):
    original = library.utils.entropy
    with patch_functions({"toylib.utils": {"entropy": ours}}):
        with patch_functions({"toylib.utils": {"entropy": ours}}):
            assert library.trainer.step(0) == ("ours", "ours")
    assert library.trainer.step(0) == ("theirs", "theirs")
    assert library.utils.entropy is original


def test_a_name_the_module_lacks_is_an_attribute_error_and_nothing_is_replaced(library):
    with pytest.raises(AttributeError, match="no function 'missing'"):
        patch_functions({"toylib.utils": {"entropy": ours, "missing": ours}})
    assert library.trainer.step(0) == ("theirs", "theirs")


def test_a_module_that_does_not_import_is_an_import_error():
    with pytest.raises(ImportError):
        patch_functions({"no_such_library_here.utils": {"entropy": ours}})
