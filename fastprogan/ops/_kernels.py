"""Import the Triton kernel modules, installed (``fastprogan.kernels``) or from a source checkout.

``setup.py`` installs the top-level ``kernels/`` folder as ``fastprogan.kernels``. In a source checkout
(tests, editable work) that package does not exist under ``fastprogan/``, so the folder is registered
under the same name; every caller sees one module object either way. Kernel modules import Triton, so
they are loaded on first use only (``import fastprogan.ops`` works without Triton).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import fastprogan


def _register_checkout_kernels() -> None:
    root = Path(fastprogan.__file__).resolve().parent.parent / "kernels"
    if not (root / "__init__.py").is_file():
        raise ModuleNotFoundError(
            "fastprogan.kernels is not installed and no kernels/ folder was found beside the package"
        )
    spec = importlib.util.spec_from_file_location(
        "fastprogan.kernels", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastprogan.kernels"] = module
    spec.loader.exec_module(module)
    fastprogan.kernels = module


def load_kernels(name: str) -> ModuleType:
    """Return ``fastprogan.kernels.<name>`` (which imports Triton)."""
    if "fastprogan.kernels" not in sys.modules:
        package_dir = Path(fastprogan.__file__).resolve().parent
        checkout_kernels = package_dir.parent / "kernels" / "bias_act.py"
        if not (package_dir / "kernels").is_dir() and checkout_kernels.is_file():
            # A source checkout: use its kernels/ (never another install's, e.g. an editable one).
            _register_checkout_kernels()
    return importlib.import_module(f"fastprogan.kernels.{name}")
