"""CLIP image-encoder weights from a local transformers folder or an OpenAI CLIP checkpoint.

Both layouts are converted to the state-dict layout of the installed ``transformers.CLIPVisionModel``.
The position embedding is resized once, here, for the target image size, and only the first
``num_layers`` blocks are kept (the paper runs at 288x288 with 11 of the 12 ViT-B/16 blocks).
See docs/pretrained-weights.md.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from amif.errors import CheckpointError, ConfigError
from amif.weights.checks import check_state_dict, shape_of
from amif.weights.files import HF_WEIGHT_FILES, hf_weight_file, load_state_dict_file, read_hf_weights

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig, CLIPVisionModel

__all__ = ["interpolate_position_embedding", "load_clip_vision", "load_clip_vision_model", "openai_visual_to_hf"]

_OPENAI_SUFFIXES = (".pt", ".pth", ".bin")
# The top-level modules of a CLIPVisionModel (without the "vision_model." prefix).
_HF_VISION_ROOTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


@functools.lru_cache(maxsize=1)
def _installed_vision_prefix() -> str:
    """The key prefix of the installed ``CLIPVisionModel``: "" in transformers 5, "vision_model." in 4."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        image_size=4,
        patch_size=2,
    )
    with torch.device("meta"):
        keys = list(CLIPVisionModel(cfg).state_dict())
    return "vision_model." if keys[0].startswith("vision_model.") else ""


def _openai_visual_prefix(sd: Mapping[str, Tensor]) -> str | None:
    """The prefix in front of ``conv1.weight`` in an OpenAI-layout visual tower ("visual." usually)."""
    for k in sd:
        if k.endswith("conv1.weight"):
            p = k[: -len("conv1.weight")]
            if f"{p}class_embedding" in sd and f"{p}positional_embedding" in sd:
                return p
    return None


def openai_visual_to_hf(
    state_dict: Mapping[str, Tensor], *, source: str = "state dict", hidden_act: str = "quick_gelu"
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Convert an OpenAI-layout CLIP visual tower to ``CLIPVisionModel`` keys (without any model prefix).

    Returns ``(config_kwargs, state_dict)``. The config is inferred from the tensor shapes: width, layers,
    patch size, grid, MLP width; heads = width // 64 as in every OpenAI ViT. ``visual.proj`` and the text
    tower are dropped. ``source`` names the file in error messages.
    """
    p = _openai_visual_prefix(state_dict)
    if p is None:
        raise CheckpointError(f"{source}: not an OpenAI CLIP visual tower (no 'visual.conv1.weight')")

    def get(name: str) -> Tensor:
        if p + name not in state_dict:
            raise CheckpointError(f"{source}: OpenAI CLIP checkpoint lacks the tensor '{p}{name}'")
        return state_dict[p + name]

    conv = get("conv1.weight")
    if conv.ndim != 4 or conv.shape[2] != conv.shape[3]:
        raise CheckpointError(
            f"{source}: '{p}conv1.weight' has shape {shape_of(conv)}, expected (width, 3, patch, patch)"
        )
    width, channels, patch = conv.shape[0], conv.shape[1], conv.shape[2]
    pos = get("positional_embedding")
    grid = math.isqrt(max(pos.shape[0] - 1, 0)) if pos.ndim == 2 else 0
    if pos.ndim != 2 or grid * grid + 1 != pos.shape[0] or grid == 0:
        raise CheckpointError(
            f"{source}: '{p}positional_embedding' has shape {shape_of(pos)}, expected (grid*grid + 1, width)"
        )
    block_re = re.compile(re.escape(p) + r"transformer\.resblocks\.(\d+)\.")
    blocks = sorted({int(m.group(1)) for k in state_dict if (m := block_re.match(k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError(
            f"{source}: OpenAI CLIP checkpoint has no consecutive '{p}transformer.resblocks.N' blocks"
        )
    if width % 64:
        raise CheckpointError(
            f"{source}: width {width} is not a multiple of 64, cannot infer the number of heads"
        )

    out: dict[str, Tensor] = {
        "embeddings.class_embedding": get("class_embedding"),
        "embeddings.patch_embedding.weight": conv,
        "embeddings.position_embedding.weight": pos,
        "pre_layrnorm.weight": get("ln_pre.weight"),
        "pre_layrnorm.bias": get("ln_pre.bias"),
        "post_layernorm.weight": get("ln_post.weight"),
        "post_layernorm.bias": get("ln_post.bias"),
    }
    names = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "attn.out_proj": "self_attn.out_proj",
    }
    for i in blocks:
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            fused = get(f"{src}attn.in_proj_{kind}")
            if fused.shape[0] != 3 * width:
                raise CheckpointError(
                    f"{source}: '{p}{src}attn.in_proj_{kind}' has shape {shape_of(fused)}, expected first dim {3 * width}"
                )
            q, k, v = fused.chunk(3, dim=0)
            out[f"{dst}self_attn.q_proj.{kind}"] = q
            out[f"{dst}self_attn.k_proj.{kind}"] = k
            out[f"{dst}self_attn.v_proj.{kind}"] = v
            for a, b in names.items():
                out[f"{dst}{b}.{kind}"] = get(f"{src}{a}.{kind}")
    config = {
        "hidden_size": width,
        "intermediate_size": get("transformer.resblocks.0.mlp.c_fc.weight").shape[0],
        "num_hidden_layers": len(blocks),
        "num_attention_heads": width // 64,
        "num_channels": channels,
        "image_size": patch * grid,
        "patch_size": patch,
        "hidden_act": hidden_act,
        "layer_norm_eps": 1e-5,
    }
    if p + "proj" in state_dict:
        config["projection_dim"] = state_dict[p + "proj"].shape[1]
    return config, out


def _hf_vision_from_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config dict, vision tensors without prefix) of a transformers CLIP folder."""
    config_file = folder / "config.json"
    try:
        cfg = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config_file}: cannot read the config: {e}") from e
    model_type = cfg.get("model_type")
    if model_type == "clip":
        if not isinstance(cfg.get("vision_config"), dict):
            raise CheckpointError(f"{config_file}: a 'clip' config without 'vision_config'")
        vcfg = dict(cfg["vision_config"])
    elif model_type == "clip_vision_model":
        vcfg = dict(cfg)
    else:
        raise CheckpointError(
            f"{folder}: unknown layout: config.json has model_type {model_type!r}; expected a CLIP model "
            "('clip' or 'clip_vision_model') or an OpenAI CLIP .pt file"
        )
    weight_file = hf_weight_file(folder)

    def select(names: list[str]) -> list[str]:
        if any(n.startswith("vision_model.") for n in names):
            chosen = [n for n in names if n.startswith("vision_model.")]
        else:
            chosen = [n for n in names if n.startswith(_HF_VISION_ROOTS)]
        return [n for n in chosen if not n.endswith("position_ids")]

    sd = read_hf_weights(weight_file, select)
    if not sd:
        raise CheckpointError(
            f"{weight_file}: holds no CLIP vision tensors ('vision_model.*' or 'embeddings.*')"
        )
    sd = {k.removeprefix("vision_model."): v for k, v in sd.items()}
    for k in ("model_type", "transformers_version", "architectures", "torch_dtype", "dtype"):
        vcfg.pop(k, None)
    return vcfg, sd


def _openai_file_in(folder: Path) -> Path:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _OPENAI_SUFFIXES)
    if not files:
        raise CheckpointError(
            f"{folder}: no weights file; expected a transformers folder (config.json + "
            f"{' / '.join(HF_WEIGHT_FILES)}) or an OpenAI CLIP checkpoint ({' / '.join(_OPENAI_SUFFIXES)})"
        )
    if len(files) > 1:
        raise CheckpointError(
            f"{folder}: several candidate weight files ({', '.join(p.name for p in files)}) and no config.json; "
            "point to one file"
        )
    return files[0]


def interpolate_position_embedding(pos: Tensor, new_grid: int) -> Tensor:
    """Resize a ViT position table ``(1 + g*g, width)`` to ``(1 + new_grid**2, width)``.

    The patch part is resized bicubically on its square grid; the CLS row is kept. Computed in float32.
    """
    grid = math.isqrt(pos.shape[0] - 1)
    if grid * grid + 1 != pos.shape[0]:
        raise ValueError(f"position table of shape {shape_of(pos)} is not 1 + a square grid")
    if grid == new_grid:
        return pos
    cls, patches = pos[:1], pos[1:].float()
    patches = patches.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    patches = nn.functional.interpolate(
        patches, size=(new_grid, new_grid), mode="bicubic", align_corners=False
    )
    patches = patches.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1).to(pos.dtype)
    return torch.cat([cls, patches], dim=0)


def load_clip_vision(
    path: str | Path,
    *,
    image_size: int | None = None,
    num_layers: int | None = None,
    attn_implementation: str | None = None,
    hidden_act: str | None = None,
) -> tuple[CLIPVisionConfig, dict[str, Tensor]]:
    """Read a CLIP image encoder from a local file or folder, ready for ``CLIPVisionModel``.

    ``path`` is a transformers folder (config.json plus model.safetensors, pytorch_model.bin or a sharded
    index) of a ``CLIPModel`` / ``CLIPVisionModel``, or an OpenAI CLIP checkpoint (``ViT-B-16.pt``,
    TorchScript or a plain state dict), or a folder holding exactly one such file. Only the vision tower is
    read. ``image_size`` resizes the position embedding (bicubic, CLS kept) and ``num_layers`` keeps the first
    blocks. ``hidden_act`` overrides the activation (an OpenAI-layout file is assumed to use QuickGELU; pass
    "gelu" for open_clip models trained with GELU).

    Returns ``(config, state_dict)``: a ``CLIPVisionConfig`` and float32 tensors named like the installed
    ``CLIPVisionModel`` (no prefix in transformers 5, ``vision_model.`` in 4), checked to load with
    ``CLIPVisionModel(config).load_state_dict(state_dict, strict=True)``.
    Note: ``CLIPVisionModel`` returns ``last_hidden_state`` *before* ``post_layernorm``; apply
    ``model.post_layernorm`` to get CLIP's ``ln_post`` output for all tokens.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModel

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: CLIP image-encoder weights not found (no such file or folder)")
    if path.is_file() and (path.name in HF_WEIGHT_FILES or path.suffix == ".safetensors"):
        if not (path.parent / "config.json").is_file():
            raise CheckpointError(f"{path}: transformers weights without a config.json next to them")
        path = path.parent
    if path.is_dir() and not (path / "config.json").is_file():
        hf_files = [name for name in HF_WEIGHT_FILES if (path / name).is_file()]
        if hf_files:
            raise CheckpointError(
                f"{path}: no config.json next to the transformers weights ({', '.join(hf_files)})"
            )
    if path.is_dir() and (path / "config.json").is_file():
        cfg, sd = _hf_vision_from_folder(path)
        source = str(path)
    else:
        file = _openai_file_in(path) if path.is_dir() else path
        source = str(file)
        raw = load_state_dict_file(file)
        if _openai_visual_prefix(raw) is None:
            if any(k.startswith(("vision_model.", "embeddings.patch_embedding")) for k in raw):
                raise CheckpointError(
                    f"{file}: transformers CLIP weights without config.json; put the file in its folder next to "
                    "its config.json and pass the folder"
                )
            sample = ", ".join(list(raw)[:5])
            raise CheckpointError(
                f"{file}: unknown layout: neither an OpenAI CLIP checkpoint ('visual.conv1.weight', ...) nor a "
                f"transformers folder; first keys: {sample}"
            )
        cfg, sd = openai_visual_to_hf(raw, source=source)
        del raw

    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    if hidden_act is not None:
        cfg["hidden_act"] = hidden_act
    layers_in_ckpt = int(cfg.get("num_hidden_layers", 12))
    if num_layers is not None:
        if num_layers < 1:
            raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
        if num_layers > layers_in_ckpt:
            raise CheckpointError(
                f"{source}: asked for {num_layers} blocks but the checkpoint has {layers_in_ckpt}"
            )
        cfg["num_hidden_layers"] = num_layers
        layer_re = re.compile(r"encoder\.layers\.(\d+)\.")
        sd = {k: v for k, v in sd.items() if not (m := layer_re.match(k)) or int(m.group(1)) < num_layers}
    if image_size is not None:
        patch = int(cfg.get("patch_size", 32))
        if image_size < patch or image_size % patch:
            raise ConfigError(f"image_size {image_size} is not a positive multiple of the patch size {patch}")
        key = "embeddings.position_embedding.weight"
        if key in sd:
            try:
                sd[key] = interpolate_position_embedding(sd[key], image_size // patch)
            except ValueError as e:
                raise CheckpointError(f"{source}: {key}: {e}") from e
        cfg["image_size"] = image_size

    config = CLIPVisionConfig.from_dict(cfg)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    prefix = _installed_vision_prefix()
    sd = {prefix + k: v for k, v in sd.items()}
    with torch.device("meta"):
        skeleton = CLIPVisionModel(config)
    check_state_dict(skeleton, sd, strict=True, context=source)
    return config, sd


def load_clip_vision_model(
    path: str | Path,
    *,
    image_size: int | None = None,
    num_layers: int | None = None,
    attn_implementation: str = "sdpa",
    hidden_act: str | None = None,
) -> CLIPVisionModel:
    """``CLIPVisionModel`` built by :func:`load_clip_vision` and loaded strictly (convenience)."""
    from transformers import CLIPVisionModel

    config, sd = load_clip_vision(
        path,
        image_size=image_size,
        num_layers=num_layers,
        attn_implementation=attn_implementation,
        hidden_act=hidden_act,
    )
    model = CLIPVisionModel(config)
    model.load_state_dict(sd, strict=True)
    return model

