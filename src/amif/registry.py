"""Named model architectures: the YAML model sections shipped in ``amif/model_configs/``.

An experiment file names one (``model: {arch: amif-base, ...}``) and overrides only what differs;
:func:`amif.create_model` builds one. Every ``*.yaml`` of the folder is an architecture named after
the file. :func:`register_model_config` adds a folder or file of one's own.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from amif.errors import ConfigError

__all__ = ["list_models", "model_config_dict", "model_config_path", "register_model_config"]

_PACKAGED = Path(__file__).resolve().parent / "model_configs"
_extra: dict[str, Path] = {}
_cache: dict[Path, dict[str, Any]] = {}


def _scan() -> dict[str, Path]:
    found = {p.stem: p for p in sorted(_PACKAGED.glob("*.yaml"))}
    found.update(_extra)
    return found


def list_models() -> list[str]:
    """The names of the registered architectures, sorted."""
    return sorted(_scan())


def register_model_config(path: str | Path) -> list[str]:
    """Register ``path`` (a model-section ``*.yaml``, or a folder of them) under its file names; returns
    the names added. A name that is already registered is replaced."""
    path = Path(path)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise ConfigError(f"{path}: no model config (*.yaml) to register")
    for f in files:
        _extra[f.stem] = f.resolve()
    return [f.stem for f in files]


def model_config_path(name: str, where: str = "arch") -> Path:
    """The YAML file of architecture ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    known = _scan()
    if not isinstance(name, str) or name not in known:
        raise ConfigError(f"unknown architecture {where}={name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def model_config_dict(name: str, where: str = "arch") -> dict[str, Any]:
    """A copy of architecture ``name``'s model section as plain data."""
    path = model_config_path(name, where)
    if path not in _cache:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"model config {path} cannot be read: {e}") from e
        if not isinstance(data, dict) or "arch" in data:
            raise ConfigError(f"model config {path} must hold one model section (a mapping without 'arch')")
        _cache[path] = data
    return copy.deepcopy(_cache[path])
