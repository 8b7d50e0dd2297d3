"""Import spandrel without torchvision, and without letting anyone else see a torchvision.

Why this exists: spandrel registers every architecture it knows when it is imported, and
two of them (LaMa, an inpainting model, and RestoreFormer, a face restorer) import
``torchvision.transforms.functional`` at module level. Neither is an upscaler. torchvision
is deliberately not installed here: PyPI's Linux torchvision wheel needs the CUDA torch
build, and a torchvision that does not match torch breaks diffusers' imports. So
``import spandrel`` would fail for want of a package that no upscaler needs.

What it does: when torchvision is importable, spandrel is imported normally. Otherwise
placeholder ``torchvision``, ``torchvision.transforms`` and
``torchvision.transforms.functional`` modules are put into ``sys.modules`` for the
duration of the spandrel import only, and removed again at once. The placeholders
provide exactly the names spandrel imports (``InterpolationMode``, ``rotate``,
``normalize``); using any of them raises :class:`TorchvisionMissing`, which says which
architecture needs torchvision. Afterwards ``importlib.util.find_spec("torchvision")`` is
``None`` again, so diffusers and transformers (which ask that question to decide which
code paths to use) never believe a torchvision is installed.

The placeholders exist only while spandrel imports, under a lock. Another thread that
imports something asking for torchvision in that very moment could still see them, so
call :func:`import_spandrel` once at startup (or from the one thread that loads models),
not from request handlers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

PLACEHOLDER_MODULES = ("torchvision", "torchvision.transforms",
                       "torchvision.transforms.functional")
# What spandrel 0.4 imports from torchvision.transforms.functional (LaMa, RestoreFormer).
PLACEHOLDER_NAMES = ("InterpolationMode", "rotate", "normalize")

_SPANDREL_DEPENDENCIES = ("torch", "torch.nn.functional", "numpy", "einops",
                          "safetensors.torch", "typing_extensions")
_lock = threading.Lock()


class TorchvisionMissing(RuntimeError):
    """A spandrel architecture that needs torchvision was used without torchvision."""


class _Unavailable:
    """Stands in for one torchvision name: calling it, or reading an attribute such as
    ``InterpolationMode.BILINEAR``, raises :class:`TorchvisionMissing`."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _refuse(self) -> TorchvisionMissing:
        return TorchvisionMissing(
            f"torchvision.transforms.functional.{self._name} is needed by this model "
            "architecture (spandrel's LaMa or RestoreFormer), but torchvision is not "
            "installed; install the torchvision build that matches torch (docs/upscaling.md)")

    def __call__(self, *args, **kwargs):
        raise self._refuse()

    def __getattr__(self, attr: str):
        if attr.startswith("_"):  # introspection (copy, pickle, inspect) stays quiet
            raise AttributeError(attr)
        raise self._refuse()

    def __repr__(self) -> str:
        return f"<torchvision placeholder {self._name}>"


def torchvision_available() -> bool:
    """Whether a real torchvision can be imported (the placeholders never count)."""
    if getattr(sys.modules.get("torchvision"), "__bildwerk_placeholder__", False):
        return False
    try:
        return importlib.util.find_spec("torchvision") is not None
    except ValueError:  # a module in sys.modules without __spec__
        return False


def import_spandrel() -> ModuleType:
    """spandrel, imported once; with placeholders for torchvision when it is missing.

    Raises whatever the spandrel import raises (e.g. ``ImportError`` for a torchvision
    that is installed but broken); callers turn it into a domain error.
    """
    module = sys.modules.get("spandrel")
    if module is not None:
        return module
    with _lock:
        module = sys.modules.get("spandrel")
        if module is not None:
            return module
        if torchvision_available():
            return importlib.import_module("spandrel")
        return _import_with_placeholders()


def _import_with_placeholders() -> ModuleType:
    # spandrel's own dependencies first, so that only spandrel's modules are imported
    # while the placeholders exist (torch, for one, looks for torchvision in places)
    for dependency in _SPANDREL_DEPENDENCIES:
        importlib.import_module(dependency)
    installed = _install_placeholders()
    try:
        return importlib.import_module("spandrel")
    finally:
        for name in installed:
            sys.modules.pop(name, None)
        importlib.invalidate_caches()


def _install_placeholders() -> list[str]:
    """Put the three placeholder modules into ``sys.modules``; returns the names added
    (never one that was already there)."""
    modules = {name: ModuleType(name, "Bildwerk placeholder: torchvision is not installed")
               for name in PLACEHOLDER_MODULES}
    functional = modules["torchvision.transforms.functional"]
    for name in PLACEHOLDER_NAMES:
        setattr(functional, name, _Unavailable(name))
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = functional
    added = []
    for name, module in modules.items():
        module.__bildwerk_placeholder__ = True
        if name not in sys.modules:
            sys.modules[name] = module
            added.append(name)
    return added
