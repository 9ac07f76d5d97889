"""amif: AMiF (Alignment, Mining and Fusion) for medical visual question answering.

The public API:

- :func:`create_model`: a new :class:`~amif.models.vqa.AMiFVQA` from a named architecture
  (:func:`list_models`) or a YAML file, with model-section overrides;
- :func:`load_model`: a trained model from its folder (weights read as safetensors);
- :func:`list_models`: the named architectures;
- :class:`VQAPredictor`: answers and explanations for one image and question.

``import amif`` loads none of torch, transformers or the models; they are imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from amif.factory import create_model, load_model, model_config

if TYPE_CHECKING:
    from amif.inference import VQAPredictor

__all__ = ["VQAPredictor", "__version__", "create_model", "list_models", "load_model", "model_config"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("amif")
    except PackageNotFoundError:  # a source tree on sys.path without an installed distribution
        import re

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.M) \
            if pyproject.is_file() else None
        return found.group(1) if found else "0+unknown"


__version__ = _version()


def list_models() -> list[str]:
    """The names of the registered architectures (``amif-base``, ``amif-tiny``, ...)."""
    from amif.registry import list_models as names

    return names()


def __getattr__(name: str) -> Any:
    if name == "VQAPredictor":
        from amif.inference import VQAPredictor

        return VQAPredictor
    raise AttributeError(f"module 'amif' has no attribute {name!r}")
