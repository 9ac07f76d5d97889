"""Reading weight files: safetensors, ``torch.save`` state dicts, TorchScript archives, sharded
transformers folders. Every failure is a :class:`~amif.errors.CheckpointError` naming the file."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from amif.errors import CheckpointError
from amif.safe_io import load_torch_file

__all__ = ["HF_WEIGHT_FILES", "hf_weight_file", "index_shards", "load_state_dict_file", "read_hf_weights",
           "read_state_dict"]

# Weight files of a transformers folder, in the order transformers itself prefers them.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _read_safetensors(file: Path, keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            names = list(f.keys()) if keys is None else list(keys)
            return {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: cannot read this safetensors file: {e}") from e


def _safetensors_keys(file: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: cannot read this safetensors file: {e}") from e


def read_state_dict(file: Path) -> dict[str, Tensor]:
    """:func:`amif.safe_io.load_torch_file` (``weights_only=True``); unwraps ``{"state_dict": ...}`` /
    ``{"model": ...}``."""
    obj = load_torch_file(file)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{file}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    return dict(obj)


def _is_torchscript(file: Path) -> bool:
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_state_dict_file(file: Path) -> dict[str, Tensor]:
    """State dict of a TorchScript archive (the OpenAI CLIP release) or of a plain ``torch.save`` file."""
    if _is_torchscript(file):
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return dict(torch.jit.load(str(file), map_location="cpu").state_dict())
        except Exception as e:
            raise CheckpointError(
                f"{file}: cannot read this TorchScript archive with torch.jit.load: {e}"
            ) from e
    return read_state_dict(file)


def hf_weight_file(folder: Path) -> Path:
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    others = sorted(p.name for p in folder.iterdir() if p.suffix in {".h5", ".msgpack", ".ckpt"})
    hint = (
        f" Only {', '.join(others)} found: amif reads PyTorch/safetensors weights only; convert them or download "
        "the PyTorch files."
        if others
        else ""
    )
    raise CheckpointError(f"{folder}: no weights file; expected one of {', '.join(HF_WEIGHT_FILES)}.{hint}")


def index_shards(index_file: Path) -> dict[str, Path]:
    """Map tensor name -> shard path from a ``*.index.json``; every shard named must exist."""
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_file}: not a valid shard index (needs a 'weight_map'): {e}") from e
    shards = {k: index_file.parent / v for k, v in weight_map.items()}
    absent = sorted({p.name for p in shards.values() if not p.is_file()})
    if absent:
        raise CheckpointError(
            f"{index_file}: shard file(s) listed in the index are missing: {', '.join(absent)}"
        )
    return shards


def read_hf_weights(weight_file: Path, select: Callable[[list[str]], list[str]]) -> dict[str, Tensor]:
    """Read the tensors whose names ``select(names)`` returns, touching only the shards that hold them."""
    name = weight_file.name
    if name == "model.safetensors":
        return _read_safetensors(weight_file, select(_safetensors_keys(weight_file)))
    if name == "pytorch_model.bin":
        sd = read_state_dict(weight_file)
        return {k: sd[k] for k in select(list(sd))}
    shards = index_shards(weight_file)
    wanted = select(list(shards))
    by_shard: dict[Path, list[str]] = {}
    for k in wanted:
        by_shard.setdefault(shards[k], []).append(k)
    out: dict[str, Tensor] = {}
    for shard, keys in by_shard.items():
        if shard.suffix == ".safetensors":
            out.update(_read_safetensors(shard, keys))
        else:
            sd = read_state_dict(shard)
            out.update({k: sd[k] for k in keys})
    return out

