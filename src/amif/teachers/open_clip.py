"""An open_clip model folder as the teacher, built from transformers modules (no open_clip, no timm).

BiomedCLIP (``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) is released as an open_clip
folder: ``open_clip_config.json``, ``open_clip_pytorch_model.bin`` (a pickled state dict) and the
BERT tokenizer files. Its towers are a timm ViT (open_clip's ``TimmModel``: the trunk under
``visual.trunk.*``, a projection under ``visual.head.*``) and a Hugging Face BERT (``HFTextEncoder``:
the model under ``text.transformer.*``, a projection under ``text.proj.*``). This module reads the config,
infers the tower sizes from the tensor shapes, builds the towers and loads the tensors into them:

- the image trunk is a small torch module with timm's parameter names (so the tensors load as they are):
  pre-norm blocks (``x + attn(norm1(x))``, ``x + mlp(norm2(x))``), LayerNorm eps 1e-6, exact GELU, one
  fused ``qkv`` projection, attention by ``scaled_dot_product_attention``, a class token and learned
  position embeddings covering it, and a final ``norm``;
- the text trunk is a transformers ``BertModel`` (``text.transformer.*`` has its names);
- the image embedding is the normed class token (``timm_pool`` ``""`` / ``"token"``) or the mean of the
  normed patch tokens (``"avg"``), then ``visual.head.proj`` (``timm_proj: linear``) or
  ``visual.head.mlp`` (``mlp``);
- the text embedding is the last hidden state at [CLS] (``cls_last_hidden_state_pooler``), BERT's
  pooler output (``cls_pooler``) or the masked mean (``mean_pooler``), then ``text.proj``: one linear
  layer without bias (``hf_proj_type: linear``) or linear - GELU - linear, hidden ``(width + embed_dim) // 2``,
  without biases (``mlp``).

Attention heads: a 64-wide head unless ``vision_cfg.head_width`` / ``text_cfg.heads`` say otherwise
(ViT-Ti/S/B/L and BERT-base all use 64). Every missing, extra or misshapen tensor is reported by name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from amif.data.transforms import CLIP_MEAN, CLIP_STD
from amif.errors import CheckpointError, DataError
from amif.safe_io import load_safetensors, load_torch_file
from amif.teachers.base import Encoding, Teacher, freeze, image_batch

__all__ = ["OPEN_CLIP_CONFIG", "OpenCLIPTeacher", "is_open_clip_folder", "read_open_clip_config"]

OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")
SUPPORTED = ("supported open_clip architectures: a timm ViT image tower (vision_cfg.timm_model_name 'vit_*', "
             "timm_pool '' / 'token' / 'avg', timm_proj 'linear' / 'mlp') with a Hugging Face BERT text tower "
             "(text_cfg.hf_model_name, hf_pooler_type cls_last_hidden_state_pooler / cls_pooler / mean_pooler, "
             "hf_proj_type linear / mlp / none)")
_IGNORED = {"text.transformer.embeddings.position_ids", "text.transformer.embeddings.token_type_ids"}
_TEXT_POOLERS = ("cls_last_hidden_state_pooler", "cls_pooler", "mean_pooler")


def is_open_clip_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with an ``open_clip_config.json``."""
    return (Path(path) / OPEN_CLIP_CONFIG).is_file()


@dataclass
class OpenCLIPSpec:
    """What ``open_clip_config.json`` says about the two towers and the preprocessing."""

    embed_dim: int
    timm_model_name: str
    pool: str
    vision_proj: str
    vision_proj_bias: bool
    image_size: int | None
    head_width: int
    hf_model_name: str
    text_pooler: str
    text_proj: str | None
    text_heads: int | None
    context_length: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _triple(value: Any, default: tuple[float, float, float], what: str, file: Path) -> tuple[float, float, float]:
    if value is None:
        return default
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise CheckpointError(f"{file}: preprocess_cfg.{what} must be three numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def read_open_clip_config(path: str | Path) -> OpenCLIPSpec:
    """Parse ``open_clip_config.json`` in folder ``path``; an unsupported architecture raises a
    CheckpointError saying what is supported."""
    file = Path(path) / OPEN_CLIP_CONFIG
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(f"teacher folder {path} has no {OPEN_CLIP_CONFIG}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"malformed {file}: {e}") from e
    if not isinstance(doc, dict):
        raise CheckpointError(f"{file} is not a JSON object")
    model = doc.get("model_cfg", doc)
    pre = doc.get("preprocess_cfg") or {}
    vision, text = model.get("vision_cfg"), model.get("text_cfg")
    if not isinstance(model, dict) or not isinstance(vision, dict) or not isinstance(text, dict):
        raise CheckpointError(f"{file} has no model_cfg with vision_cfg and text_cfg objects")
    if not isinstance(model.get("embed_dim"), int):
        raise CheckpointError(f"{file}: model_cfg.embed_dim must be an integer")
    timm_name = vision.get("timm_model_name")
    if not isinstance(timm_name, str) or not timm_name.startswith("vit_"):
        raise CheckpointError(f"{file}: image tower {timm_name or 'open_clip built-in'!r} is not supported; "
                              + SUPPORTED)
    if not isinstance(text.get("hf_model_name"), str):
        raise CheckpointError(f"{file}: text tower without hf_model_name (open_clip built-in) is not supported; "
                              + SUPPORTED)
    pool = vision.get("timm_pool") or ""
    vproj = vision.get("timm_proj", "linear")
    pooler = text.get("hf_pooler_type") or "cls_last_hidden_state_pooler"
    tproj = text.get("hf_proj_type")
    tproj = None if tproj in (None, "none", "") else tproj
    problems = []
    if pool not in ("", "token", "avg"):
        problems.append(f"vision_cfg.timm_pool {pool!r}")
    if vproj not in ("linear", "mlp"):
        problems.append(f"vision_cfg.timm_proj {vproj!r}")
    if pooler not in _TEXT_POOLERS:
        problems.append(f"text_cfg.hf_pooler_type {pooler!r}")
    if tproj not in (None, "linear", "mlp"):
        problems.append(f"text_cfg.hf_proj_type {tproj!r}")
    if problems:
        raise CheckpointError(f"{file}: {', '.join(problems)} not supported; " + SUPPORTED)
    size = pre.get("size", vision.get("image_size"))
    if isinstance(size, (list, tuple)):
        size = size[0] if len(set(size)) == 1 else None
    return OpenCLIPSpec(
        embed_dim=model["embed_dim"], timm_model_name=timm_name, pool=pool, vision_proj=vproj,
        vision_proj_bias=bool(vision.get("timm_proj_bias", False)),
        image_size=int(size) if isinstance(size, (int, float)) else None,
        head_width=int(vision.get("head_width", 64)), hf_model_name=text["hf_model_name"], text_pooler=pooler,
        text_proj=tproj, text_heads=text.get("heads") if isinstance(text.get("heads"), int) else None,
        context_length=int(text.get("context_length", 77)),
        mean=_triple(pre.get("mean"), CLIP_MEAN, "mean", file), std=_triple(pre.get("std"), CLIP_STD, "std", file),
    )


def _load_state(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The checkpoint's tensors: the pickle is read with ``weights_only=True`` (no code runs)."""
    for name in WEIGHT_FILES:
        file = path / name
        if file.is_file():
            break
    else:
        raise CheckpointError(f"teacher folder {path} has no weights (expected {' or '.join(WEIGHT_FILES)})")
    state: Any = load_safetensors(file) if file.suffix == ".safetensors" else load_torch_file(file)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}, file


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})


class _Expect:
    """Collects the expected open_clip tensor shapes and the open_clip -> transformers name map."""

    def __init__(self, state: Mapping[str, torch.Tensor], file: Path) -> None:
        self.state, self.file = state, file
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.mapping: dict[str, str] = {}

    def dim(self, key: str, axis: int) -> int:
        if key not in self.state:
            raise CheckpointError(f"{self.file}: missing tensor {key}")
        t = self.state[key]
        if t.dim() <= abs(axis) - (axis < 0):
            raise CheckpointError(f"{self.file}: tensor {key} has shape {tuple(t.shape)}")
        return int(t.shape[axis])

    def add(self, key: str, shape: Sequence[int], target: str | None = None) -> None:
        self.shapes[key] = tuple(shape)
        if target is not None:
            self.mapping[key] = target

    def linear(self, key: str, out: int, inp: int, target: str | None, bias: bool = True) -> None:
        self.add(f"{key}.weight", (out, inp), None if target is None else f"{target}.weight")
        if bias:
            self.add(f"{key}.bias", (out,), None if target is None else f"{target}.bias")

    def norm(self, key: str, width: int, target: str) -> None:
        self.add(f"{key}.weight", (width,), f"{target}.weight")
        self.add(f"{key}.bias", (width,), f"{target}.bias")

    def check(self) -> None:
        """Missing, extra (other than obsolete buffers) and misshapen tensors, all named at once."""
        missing = [k for k in self.shapes if k not in self.state]
        extra = [k for k in self.state if k not in self.shapes and k not in _IGNORED]
        shaped = [f"{k} {tuple(self.state[k].shape)} (expected {s})" for k, s in self.shapes.items()
                  if k in self.state and tuple(self.state[k].shape) != s]
        parts = []
        for what, names in (("missing", missing), ("unexpected", extra), ("misshapen", shaped)):
            if names:
                more = f" and {len(names) - 8} more" if len(names) > 8 else ""
                parts.append(f"{len(names)} {what}: {', '.join(names[:8])}{more}")
        if parts:
            raise CheckpointError(f"{self.file} does not fit the open_clip layout of its config "
                                  f"({'; '.join(parts)})")


class _Block(nn.Module):
    """One pre-norm ViT block with timm's parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ...)."""

    def __init__(self, width: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(width, 3 * width)
        self.attn.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(width, mlp)
        self.mlp.fc2 = nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.attn.proj(att)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class _ViT(nn.Module):
    """A timm ``VisionTransformer`` trunk (class token, learned positions, pre-norm blocks, final norm)
    under timm's parameter names; returns the normed tokens ``[B, 1 + N, D]``."""

    def __init__(self, width: int, layers: int, heads: int, mlp: int, patch: int, tokens: int) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, width))
        self.blocks = nn.ModuleList(_Block(width, heads, mlp) for _ in range(layers))
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class _VisionTower(nn.Module):
    """timm ViT trunk + open_clip's head, pooled as ``timm_pool`` says."""

    def __init__(self, trunk: nn.Module, head: nn.Module, pool: str) -> None:
        super().__init__()
        self.trunk, self.head, self.pool = trunk, head, pool

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk(pixel_values)
        pooled = hidden[:, 1:].mean(dim=1) if self.pool == "avg" else hidden[:, 0]
        return self.head(pooled)


class _TextTower(nn.Module):
    """BERT as a transformers ``BertModel`` + open_clip's pooler and projection."""

    def __init__(self, bert: nn.Module, proj: nn.Module, pooler: str) -> None:
        super().__init__()
        self.bert, self.proj, self.pooler = bert, proj, pooler

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooler == "cls_pooler":
            pooled = out.pooler_output
        elif self.pooler == "mean_pooler":
            m = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * m).sum(1) / m.sum(1).clamp_min(1)
        else:
            pooled = out.last_hidden_state[:, 0]
        return self.proj(pooled)


def _mlp(width: int, hidden: int, out: int, bias: tuple[bool, bool]) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden, bias=bias[0]), nn.GELU(), nn.Linear(hidden, out, bias=bias[1]))


def _vision(spec: OpenCLIPSpec, ex: _Expect) -> tuple[_VisionTower, int]:
    t = "visual.trunk."
    width = ex.dim(f"{t}patch_embed.proj.weight", 0)
    patch = ex.dim(f"{t}patch_embed.proj.weight", -1)
    tokens = ex.dim(f"{t}pos_embed", 1)
    grid = math.isqrt(max(tokens - 1, 0))
    if grid * grid != tokens - 1:
        raise CheckpointError(f"{ex.file}: {t}pos_embed has {tokens} positions, not 1 + a square patch grid")
    size = grid * patch
    if spec.image_size is not None and spec.image_size != size:
        raise CheckpointError(f"{ex.file}: the config's image size {spec.image_size} does not match the "
                              f"weights ({grid}x{grid} patches of {patch} px = {size})")
    m = re.search(r"patch(\d+)", spec.timm_model_name)
    if m and int(m.group(1)) != patch:
        raise CheckpointError(f"{ex.file}: {spec.timm_model_name} has {m.group(1)} px patches but the weights "
                              f"have {patch}")
    layers = _count(ex.state, rf"{re.escape(t)}blocks\.(\d+)\..*")
    if layers == 0 or width % spec.head_width:
        raise CheckpointError(f"{ex.file}: {layers} ViT blocks of width {width} (head width {spec.head_width})")
    mlp = ex.dim(f"{t}blocks.0.mlp.fc1.weight", 0)
    ex.add(f"{t}cls_token", (1, 1, width), "trunk.cls_token")
    ex.add(f"{t}pos_embed", (1, tokens, width), "trunk.pos_embed")
    ex.linear(f"{t}patch_embed.proj", width, 0, "trunk.patch_embed.proj")
    ex.shapes[f"{t}patch_embed.proj.weight"] = (width, 3, patch, patch)
    for i in range(layers):
        b = f"blocks.{i}."
        ex.norm(f"{t}{b}norm1", width, f"trunk.{b}norm1")
        ex.linear(f"{t}{b}attn.qkv", 3 * width, width, f"trunk.{b}attn.qkv")
        ex.linear(f"{t}{b}attn.proj", width, width, f"trunk.{b}attn.proj")
        ex.norm(f"{t}{b}norm2", width, f"trunk.{b}norm2")
        ex.linear(f"{t}{b}mlp.fc1", mlp, width, f"trunk.{b}mlp.fc1")
        ex.linear(f"{t}{b}mlp.fc2", width, mlp, f"trunk.{b}mlp.fc2")
    ex.norm(f"{t}norm", width, "trunk.norm")
    e = spec.embed_dim
    if spec.vision_proj == "linear":
        ex.linear("visual.head.proj", e, width, "head.proj", bias=spec.vision_proj_bias)
        head: nn.Module = nn.Sequential()
        head.add_module("proj", nn.Linear(width, e, bias=spec.vision_proj_bias))
    else:
        ex.linear("visual.head.mlp.fc1", 2 * e, width, "head.0")
        ex.linear("visual.head.mlp.fc2", e, 2 * e, "head.2", bias=spec.vision_proj_bias)
        head = _mlp(width, 2 * e, e, (True, spec.vision_proj_bias))
    trunk = _ViT(width, layers, width // spec.head_width, mlp, patch, tokens)
    return _VisionTower(trunk, head, spec.pool), size


def _text(spec: OpenCLIPSpec, ex: _Expect, pad_token_id: int) -> tuple[_TextTower, int]:
    from transformers import BertConfig, BertModel

    t = "text.transformer."
    if f"{t}embeddings.word_embeddings.weight" not in ex.state:
        raise CheckpointError(f"{ex.file}: no {t}embeddings.word_embeddings.weight: the text tower "
                              f"{spec.hf_model_name!r} is not a BERT; " + SUPPORTED)
    vocab, width = (ex.dim(f"{t}embeddings.word_embeddings.weight", a) for a in (0, 1))
    positions = ex.dim(f"{t}embeddings.position_embeddings.weight", 0)
    types = ex.dim(f"{t}embeddings.token_type_embeddings.weight", 0)
    layers = _count(ex.state, rf"{re.escape(t)}encoder\.layer\.(\d+)\..*")
    heads = spec.text_heads or width // 64
    if layers == 0 or heads < 1 or width % heads:
        raise CheckpointError(f"{ex.file}: {layers} BERT layers of width {width} with {heads} heads")
    inter = ex.dim(f"{t}encoder.layer.0.intermediate.dense.weight", 0)
    ex.add(f"{t}embeddings.word_embeddings.weight", (vocab, width), "bert.embeddings.word_embeddings.weight")
    ex.add(f"{t}embeddings.position_embeddings.weight", (positions, width),
           "bert.embeddings.position_embeddings.weight")
    ex.add(f"{t}embeddings.token_type_embeddings.weight", (types, width),
           "bert.embeddings.token_type_embeddings.weight")
    ex.norm(f"{t}embeddings.LayerNorm", width, "bert.embeddings.LayerNorm")
    for i in range(layers):
        b = f"{t}encoder.layer.{i}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            ex.linear(b + part, width, width, f"bert.encoder.layer.{i}.{part}")
        ex.norm(b + "attention.output.LayerNorm", width, f"bert.encoder.layer.{i}.attention.output.LayerNorm")
        ex.linear(b + "intermediate.dense", inter, width, f"bert.encoder.layer.{i}.intermediate.dense")
        ex.linear(b + "output.dense", width, inter, f"bert.encoder.layer.{i}.output.dense")
        ex.norm(b + "output.LayerNorm", width, f"bert.encoder.layer.{i}.output.LayerNorm")
    if spec.text_pooler == "cls_pooler":
        ex.linear(f"{t}pooler.dense", width, width, "bert.pooler.dense")
    e = spec.embed_dim
    if spec.text_proj == "linear":
        ex.linear("text.proj", e, width, "proj", bias=False)
        proj: nn.Module = nn.Linear(width, e, bias=False)
    elif spec.text_proj == "mlp":
        hidden = (width + e) // 2
        ex.linear("text.proj.0", hidden, width, "proj.0", bias=False)
        ex.linear("text.proj.2", e, hidden, "proj.2", bias=False)
        proj = _mlp(width, hidden, e, (False, False))
    elif width == e:
        proj = nn.Identity()
    else:
        raise CheckpointError(f"{ex.file}: text width {width} differs from embed_dim {e} and hf_proj_type is none")
    cfg = BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, max_position_embeddings=positions, type_vocab_size=types,
                     hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=pad_token_id, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    cfg._attn_implementation = "sdpa"
    bert = BertModel(cfg, add_pooling_layer=spec.text_pooler == "cls_pooler")
    return _TextTower(bert, proj, spec.text_pooler), positions


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

    errors = []
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # no config.json, unknown tokenizer_class, ...: try the files directly
        errors.append(f"{type(e).__name__}: {e}")
    try:
        if (path / "tokenizer.json").is_file():
            special = {}
            side = path / "special_tokens_map.json"
            if side.is_file():
                special = {k: v if isinstance(v, str) else v.get("content") for k, v in
                           json.loads(side.read_text(encoding="utf-8")).items()}
            return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), **special)
        if (path / "vocab.txt").is_file():
            return BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    raise CheckpointError(f"teacher folder {path} has no usable tokenizer (tokenizer.json, vocab.txt): "
                          + "; ".join(errors))


class OpenCLIPTeacher(Teacher):
    """An open_clip image-text model (BiomedCLIP as released) as the soft-label teacher."""

    uses_images = True

    def __init__(self, vision: nn.Module, text: nn.Module, tokenizer: Any, *, name: str, logit_scale: float,
                 image_size: int, mean: Sequence[float], std: Sequence[float], context_length: int) -> None:
        super().__init__()
        self.vision, self.text = freeze(vision), freeze(text)
        self.tokenizer = tokenizer
        self.name = name
        self.logit_scale = float(logit_scale)
        self.image_size = int(image_size)
        self.mean = tuple(float(x) for x in mean)  # type: ignore[assignment]
        self.std = tuple(float(x) for x in std)  # type: ignore[assignment]
        self.max_length = int(context_length)

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu", *, max_length: int | None = None,
                    logit_scale: float | None = None, name: str | None = None) -> OpenCLIPTeacher:
        """Build the towers from ``open_clip_config.json`` and the weights in ``path``; nothing is downloaded.

        ``max_length`` caps the caption tokens (default: the config's ``context_length``, 256 for
        BiomedCLIP); ``logit_scale`` overrides ``exp(logit_scale)`` of the checkpoint.
        """
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"teacher folder {path} not found")
        spec = read_open_clip_config(path)
        state, file = _load_state(path)
        tokenizer = _load_tokenizer(path)
        ex = _Expect(state, file)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        vision, size = _vision(spec, ex)
        text, positions = _text(spec, ex, int(pad))
        ex.add("logit_scale", ())
        ex.check()
        vision.load_state_dict({t: state[k] for k, t in ex.mapping.items() if k.startswith("visual.")}, strict=True)
        text.load_state_dict({t: state[k] for k, t in ex.mapping.items() if k.startswith("text.")}, strict=True)
        scale = math.exp(float(state["logit_scale"])) if logit_scale is None else logit_scale
        length = min(max_length or spec.context_length, spec.context_length, positions)
        teacher = cls(vision, text, tokenizer, name=name or path.name, logit_scale=scale, image_size=size,
                      mean=spec.mean, std=spec.std, context_length=length)
        return teacher.to(device)  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> OpenCLIPTeacher:
        self.vision.to(device)
        self.text.to(device)
        self._device = torch.device(device)
        return self

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = image_batch(pixel_values)
        if tuple(pixel_values.shape[2:]) != (self.image_size, self.image_size):
            raise DataError(f"teacher {self.name!r} takes {self.image_size}x{self.image_size} images, "
                            f"got {tuple(pixel_values.shape[2:])}")
        return F.normalize(self.vision(pixel_values.to(self._device, torch.float32)).float(), dim=-1)

    @torch.no_grad()
    def encode_tokens(self, encodings: Sequence[Encoding]) -> torch.Tensor:
        tok = self.pad(encodings)
        out = self.text(tok["input_ids"].to(self._device), tok["attention_mask"].to(self._device))
        return F.normalize(out.float(), dim=-1)
