"""Load pretrained weights from local folders into amif's encoders, with errors that say what is wrong.

amif never downloads anything at run time. The image encoder is a ``transformers.CLIPVisionModel``; its
weights come either from a transformers folder (``CLIPModel``, ``CLIPVisionModel``, ...) or from the
original OpenAI CLIP checkpoint (``ViT-B-16.pt``). Both are converted to the state-dict layout of the
installed ``CLIPVisionModel``. The position embedding is resized once, here, for the target image size, and
only the first ``num_layers`` blocks are kept. The paper runs at 288x288 with 11 of the 12 ViT-B/16 blocks.
The text encoder is a transformers folder (Bio_ClinicalBERT in the paper). See docs/pretrained-weights.md.
"""

from __future__ import annotations

import functools
import json
import math
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from amif.errors import CheckpointError, ConfigError
from amif.safe_io import load_torch_file

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "check_state_dict",
    "check_text_encoder_folder",
    "interpolate_position_embedding",
    "load_clip_vision",
    "load_bert_mlm_head",
    "load_clip_vision_model",
    "load_text_encoder_folder",
    "openai_visual_to_hf",
]

# Weight files of a transformers folder, in the order transformers itself prefers them.
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_OPENAI_SUFFIXES = (".pt", ".pth", ".bin")
# The top-level modules of a CLIPVisionModel (without the "vision_model." prefix).
_HF_VISION_ROOTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


# --------------------------------------------------------------------------------------------------
# state-dict checks
# --------------------------------------------------------------------------------------------------


def _shape(t: Tensor | torch.Size | tuple) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, Tensor) else tuple(t)


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True, context: str,
    allow_missing: bool = False,
) -> None:
    """Raise ``CheckpointError`` unless ``state_dict`` fits ``model``.

    Every tensor whose shape differs is listed with the expected and the found shape. With ``strict``,
    missing and unexpected keys are listed too (``allow_missing`` keeps the check on unexpected keys
    but lets the file hold a subset of the model's tensors). ``context`` (the folder or file the weights came from)
    starts the message. The model may live on the meta device; only shapes are compared.
    """
    expected = model.state_dict()
    wrong = [
        f"  {name}: expected {_shape(expected[name])}, got {_shape(t)}"
        for name, t in state_dict.items()
        if name in expected and _shape(expected[name]) != _shape(t)
    ]
    missing = [name for name in expected if name not in state_dict] if strict and not allow_missing else []
    unexpected = [name for name in state_dict if name not in expected] if strict else []
    if not (wrong or missing or unexpected):
        return
    parts = [f"{context}: the weights do not fit {type(model).__name__}"]
    if wrong:
        parts.append(f"{len(wrong)} tensor(s) with the wrong shape:\n" + "\n".join(wrong))
    if missing:
        parts.append(f"{len(missing)} missing tensor(s):\n" + "\n".join(f"  {n}" for n in missing))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s):\n" + "\n".join(f"  {n}" for n in unexpected))
    raise CheckpointError("\n".join(parts))


# --------------------------------------------------------------------------------------------------
# reading weight files
# --------------------------------------------------------------------------------------------------


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


def _torch_load(file: Path) -> dict[str, Tensor]:
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


def _load_torch_file(file: Path) -> dict[str, Tensor]:
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
    return _torch_load(file)


def _hf_weight_file(folder: Path) -> Path:
    for name in _HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    others = sorted(p.name for p in folder.iterdir() if p.suffix in {".h5", ".msgpack", ".ckpt"})
    hint = (
        f" Only {', '.join(others)} found: amif reads PyTorch/safetensors weights only; convert them or download "
        "the PyTorch files."
        if others
        else ""
    )
    raise CheckpointError(f"{folder}: no weights file; expected one of {', '.join(_HF_WEIGHT_FILES)}.{hint}")


def _index_shards(index_file: Path) -> dict[str, Path]:
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


def _read_hf_weights(weight_file: Path, select: Callable[[list[str]], list[str]]) -> dict[str, Tensor]:
    """Read the tensors whose names ``select(names)`` returns, touching only the shards that hold them."""
    name = weight_file.name
    if name == "model.safetensors":
        return _read_safetensors(weight_file, select(_safetensors_keys(weight_file)))
    if name == "pytorch_model.bin":
        sd = _torch_load(weight_file)
        return {k: sd[k] for k in select(list(sd))}
    shards = _index_shards(weight_file)
    wanted = select(list(shards))
    by_shard: dict[Path, list[str]] = {}
    for k in wanted:
        by_shard.setdefault(shards[k], []).append(k)
    out: dict[str, Tensor] = {}
    for shard, keys in by_shard.items():
        if shard.suffix == ".safetensors":
            out.update(_read_safetensors(shard, keys))
        else:
            sd = _torch_load(shard)
            out.update({k: sd[k] for k in keys})
    return out


# --------------------------------------------------------------------------------------------------
# CLIP vision: layouts
# --------------------------------------------------------------------------------------------------


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
            f"{source}: '{p}conv1.weight' has shape {_shape(conv)}, expected (width, 3, patch, patch)"
        )
    width, channels, patch = conv.shape[0], conv.shape[1], conv.shape[2]
    pos = get("positional_embedding")
    grid = math.isqrt(max(pos.shape[0] - 1, 0)) if pos.ndim == 2 else 0
    if pos.ndim != 2 or grid * grid + 1 != pos.shape[0] or grid == 0:
        raise CheckpointError(
            f"{source}: '{p}positional_embedding' has shape {_shape(pos)}, expected (grid*grid + 1, width)"
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
                    f"{source}: '{p}{src}attn.in_proj_{kind}' has shape {_shape(fused)}, expected first dim {3 * width}"
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
    weight_file = _hf_weight_file(folder)

    def select(names: list[str]) -> list[str]:
        if any(n.startswith("vision_model.") for n in names):
            chosen = [n for n in names if n.startswith("vision_model.")]
        else:
            chosen = [n for n in names if n.startswith(_HF_VISION_ROOTS)]
        return [n for n in chosen if not n.endswith("position_ids")]

    sd = _read_hf_weights(weight_file, select)
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
            f"{' / '.join(_HF_WEIGHT_FILES)}) or an OpenAI CLIP checkpoint ({' / '.join(_OPENAI_SUFFIXES)})"
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
        raise ValueError(f"position table of shape {_shape(pos)} is not 1 + a square grid")
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
    if path.is_file() and (path.name in _HF_WEIGHT_FILES or path.suffix == ".safetensors"):
        if not (path.parent / "config.json").is_file():
            raise CheckpointError(f"{path}: transformers weights without a config.json next to them")
        path = path.parent
    if path.is_dir() and not (path / "config.json").is_file():
        hf_files = [name for name in _HF_WEIGHT_FILES if (path / name).is_file()]
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
        raw = _load_torch_file(file)
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


# --------------------------------------------------------------------------------------------------
# text encoder (BERT family, transformers folder)
# --------------------------------------------------------------------------------------------------

# Any of these makes a usable tokenizer: fast tokenizer file, WordPiece vocab, BPE vocab+merges, SentencePiece.
_TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))
_SENTENCEPIECE_SUFFIX = ".model"


def check_text_encoder_folder(path: str | Path) -> Path:
    """Check that a transformers text-encoder folder has config.json, weights and tokenizer files.

    Raises ``CheckpointError`` naming the folder and what is missing; returns the folder as a ``Path``.
    """
    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(f"{folder}: text-encoder folder not found")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: the text encoder must be a transformers folder, not a file")
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json (the model configuration)")
    try:
        weight_file = _hf_weight_file(folder)
    except CheckpointError as e:
        problems.append(str(e).removeprefix(f"{folder}: ").rstrip("."))
    else:
        if weight_file.name.endswith(".index.json"):
            _index_shards(weight_file)
    has_tokenizer = any(all((folder / f).is_file() for f in files) for files in _TOKENIZER_FILE_SETS) or any(
        p.suffix == _SENTENCEPIECE_SUFFIX for p in folder.iterdir()
    )
    if not has_tokenizer:
        problems.append(
            "tokenizer files (tokenizer.json, or vocab.txt, or vocab.json + merges.txt, or a *.model)"
        )
    if problems:
        raise CheckpointError(f"{folder}: incomplete text-encoder folder; missing: " + "; ".join(problems))
    return folder


def load_text_encoder_folder(
    path: str | Path, **model_kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(AutoModel, AutoTokenizer)`` from a local transformers folder (Bio_ClinicalBERT in the paper).

    Checks the folder first. Tensors of the wrong shape and missing tensors (other than the unused
    ``pooler``) raise ``CheckpointError`` listing them, instead of being silently re-initialised.
    ``model_kwargs`` go to ``AutoModel.from_pretrained`` (e.g. ``attn_implementation="sdpa"``).
    """
    from transformers import AutoModel, AutoTokenizer

    folder = check_text_encoder_folder(path)
    try:
        model, info = AutoModel.from_pretrained(
            str(folder),
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **model_kwargs,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{folder}: cannot load the text encoder: {e}") from e
    wrong = [
        f"  {name}: expected {_shape(want)}, got {_shape(got)}" for name, got, want in info["mismatched_keys"]
    ]
    missing = sorted(
        k for k in info["missing_keys"] if not k.startswith("pooler.") and "position_ids" not in k
    )
    if wrong or missing:
        parts = [f"{folder}: the weights do not fit {type(model).__name__} built from config.json"]
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) with the wrong shape:\n" + "\n".join(sorted(wrong)))
        if missing:
            parts.append(f"{len(missing)} missing tensor(s):\n" + "\n".join(f"  {n}" for n in missing))
        raise CheckpointError("\n".join(parts))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{folder}: cannot load the tokenizer: {e}") from e
    return model, tokenizer


# The masked-LM head of a ``BertForPreTraining`` / ``BertForMaskedLM`` checkpoint (Bio_ClinicalBERT ships
# one), as the answer decoder names it. The output matrix is tied to the word embeddings in both.
_MLM_HEAD_KEYS = {
    "cls.predictions.transform.dense.weight": "head_transform.weight",
    "cls.predictions.transform.dense.bias": "head_transform.bias",
    "cls.predictions.transform.LayerNorm.weight": "head_norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "head_norm.bias",
    "cls.predictions.bias": "head_bias",
}
_LEGACY_LN = {"gamma": "weight", "beta": "bias"}  # names of TF-converted BERT checkpoints


def _mlm_key(name: str) -> str:
    name = re.sub(r"^(bert\.|model\.)", "", name)
    name = re.sub(r"LayerNorm\.(gamma|beta)$", lambda m: "LayerNorm." + _LEGACY_LN[m.group(1)], name)
    return "cls.predictions.bias" if name == "cls.predictions.decoder.bias" else name


def load_bert_mlm_head(path: str | Path) -> dict[str, Tensor]:
    """The MLM-head tensors of a BERT folder under the answer decoder's names (``head_transform.*``,
    ``head_norm.*``, ``head_bias``), or ``{}`` when the checkpoint has no MLM head (a plain ``BertModel``).

    ``BertLMHeadModel.from_pretrained`` (the published decoder) starts its LM head from these tensors;
    without them the decoder's head transform would start random. A head with some tensors but not all
    is an error naming the missing ones.
    """
    folder = Path(path)
    weight_file = _hf_weight_file(folder)

    def select(names: list[str]) -> list[str]:
        return [n for n in names if _mlm_key(n) in _MLM_HEAD_KEYS]

    found = {_MLM_HEAD_KEYS[_mlm_key(k)]: v for k, v in _read_hf_weights(weight_file, select).items()}
    if not found:
        return {}
    missing = sorted(set(_MLM_HEAD_KEYS.values()) - set(found))
    if missing:
        raise CheckpointError(f"{weight_file}: the masked-LM head is incomplete; missing the tensors for "
                              f"{', '.join(missing)}")
    return found
