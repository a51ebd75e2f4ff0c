"""Replacing a library's functions by ours where its code looks them up, undoably.

A trainer finds a helper either through its defining module (``verl_F.entropy_from_logits``)
or through a name it bound at import (``from .utils import selective_log_softmax``).
:func:`patch_functions` replaces both: the defining module's attribute, which later imports
and attribute lookups see, and every name in the library's already-loaded modules that is
bound to the same function object. It is how Liger-Kernel's ``apply_liger_kernel_to_*``
patch model code, with a way back for tests and for comparing runs.
"""

import importlib
import sys
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["FunctionPatches", "patch_functions"]


class FunctionPatches:
    """The replacements one :func:`patch_functions` call made; :meth:`undo` restores them.

    Attributes:
        replaced: ``[(module name, attribute name)]``, every binding that was replaced.
    """

    def __init__(self, bindings: List[Tuple[Any, str, Any]], functions: List[Tuple[str, Any, Any]]) -> None:
        self._bindings = bindings  # (module, name, original object)
        self._functions = functions  # (package, original, replacement)
        self.replaced: List[Tuple[str, str]] = [(module.__name__, name) for module, name, _ in bindings]

    def undo(self) -> None:
        """Put every replaced binding back as it was, and every name bound to a replacement
        since (a module of the library imported while the patch was on, binding it with
        ``from ... import``) back to the original. Idempotent. Patches undone in the
        reverse order of their application (as nested ``with`` blocks are) restore the
        originals."""
        for module, name, original in reversed(self._bindings):
            setattr(module, name, original)
        for package, original, replacement in reversed(self._functions):
            for loaded_module in _loaded_modules(package):
                for attribute, value in list(vars(loaded_module).items()):
                    if value is replacement:
                        setattr(loaded_module, attribute, original)
        self._bindings = []
        self._functions = []

    def __enter__(self) -> "FunctionPatches":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.undo()


def _loaded_modules(package: str) -> List[Any]:
    """The modules of ``package`` (a top-level name) in ``sys.modules``."""
    return [
        m for key, m in list(sys.modules.items())
        if m is not None and (key == package or key.startswith(package + "."))
    ]


def patch_functions(replacements: Dict[str, Dict[str, Callable[..., Any]]]) -> FunctionPatches:
    """Replace functions of a library's modules by ours, in each defining module and
    wherever the library's loaded modules bound the same objects by name. All or nothing:
    every module is imported and every name checked before anything is replaced.

    Args:
        replacements: defining module (e.g. ``"verl.utils.torch_functional"``, imported if
            it is not yet) -> {attribute name -> the function to put in its place}.

    Returns:
        The :class:`FunctionPatches`, whose ``undo()`` (or use as a context manager)
        restores the originals.

    Raises:
        ImportError: a module does not import.
        AttributeError: a name its module does not define (the library's version differs
            from the one the integration targets).

    Example::

        >>> import json
        >>> with patch_functions({"json": {"dumps": lambda obj, **kwargs: "patched"}}):
        ...     json.dumps(1)
        'patched'
    """
    originals: List[Tuple[str, Any, Callable[..., Any]]] = []  # (package, original, replacement)
    for module_name, functions in replacements.items():
        module = importlib.import_module(module_name)
        package = module_name.split(".")[0]
        for name, replacement in functions.items():
            if not hasattr(module, name):
                raise AttributeError(
                    f"{module_name} has no function {name!r}: this version of {package} is not one "
                    "the integration supports"
                )
            originals.append((package, getattr(module, name), replacement))
    bindings: List[Tuple[Any, str, Any]] = []
    for package, original, replacement in originals:
        for loaded_module in _loaded_modules(package):
            for attribute, value in list(vars(loaded_module).items()):
                if value is original:
                    bindings.append((loaded_module, attribute, original))
                    setattr(loaded_module, attribute, replacement)
    return FunctionPatches(bindings, originals)
