"""A CLIP-style model in a transformers folder (``config.json`` + weights + tokenizer) as the teacher.

Any model with ``get_image_features`` / ``get_text_features`` that ``AutoModel`` loads. BiomedCLIP as
Microsoft releases it is an open_clip folder instead: :mod:`amif.teachers.open_clip`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from amif.data.transforms import CLIP_MEAN, CLIP_STD
from amif.errors import CheckpointError
from amif.teachers.base import (
    DEFAULT_TEXT_TOKENS,
    Encoding,
    Teacher,
    call_params,
    check_model_folder,
    features,
    freeze,
    image_batch,
)

__all__ = ["CLIPTeacher"]


def _side(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        for k in ("height", "shortest_edge", "width"):
            if isinstance(value.get(k), int):
                return value[k]
    return None


def _read_preprocessor(path: Path) -> dict[str, Any]:
    file = path / "preprocessor_config.json"
    if not file.is_file():
        return {}
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"malformed preprocessor_config.json in {path}: {e}") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"preprocessor_config.json in {path} is not a JSON object")
    out: dict[str, Any] = {}
    size = _side(cfg.get("crop_size")) or _side(cfg.get("size"))
    if size:
        out["image_size"] = size
    for key, name in (("image_mean", "mean"), ("image_std", "std")):
        v = cfg.get(key)
        if isinstance(v, (list, tuple)) and len(v) == 3:
            out[name] = tuple(float(x) for x in v)
    return out


def _remote_code(path: Path) -> bool:
    """Whether the folder's ``config.json`` points at model code shipped in the folder (``auto_map``)."""
    try:
        return "auto_map" in json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


class CLIPTeacher(Teacher):
    """A CLIP-style model (``get_image_features`` / ``get_text_features``) as the soft-label teacher."""

    uses_images = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        name: str,
        logit_scale: float,
        image_size: int = 224,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        max_length: int = DEFAULT_TEXT_TOKENS,
    ) -> None:
        super().__init__()
        for attr in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, attr, None)):
                raise CheckpointError(f"teacher model {name!r} ({type(model).__name__}) has no {attr}(): "
                                      "not a CLIP-style model")
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.name = name
        self.logit_scale = float(logit_scale)
        self.image_size = int(image_size)
        self.mean = tuple(float(x) for x in mean)  # type: ignore[assignment]
        self.std = tuple(float(x) for x in std)  # type: ignore[assignment]
        limit = getattr(getattr(getattr(model, "config", None), "text_config", None), "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self._text_args = call_params(model.get_text_features)
        self._device = next(model.parameters()).device

    @classmethod
    def from_folder(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        trust_remote_code: bool = False,
        max_length: int = DEFAULT_TEXT_TOKENS,
        logit_scale: float | None = None,
        name: str | None = None,
    ) -> CLIPTeacher:
        """Load model, tokenizer and preprocessing (``preprocessor_config.json`` when present) from ``path``.

        ``logit_scale`` overrides the model's learned scale (``exp(model.logit_scale)``). Nothing is
        downloaded (``local_files_only=True``); ``trust_remote_code`` is needed for models shipped as
        remote code. A remote-code folder that does not load (the HF port of BiomedCLIP imports
        ``transformers.modeling_attn_mask_utils``, which transformers 5 removed) raises a CheckpointError
        pointing at the released open_clip folder, which :class:`~amif.teachers.OpenCLIPTeacher` loads.
        """
        import transformers
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        check_model_folder(path, "teacher")
        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                      trust_remote_code=trust_remote_code)
        except Exception as e:  # transformers / safetensors raise many types on a broken folder
            first = (str(e).strip().splitlines() or [""])[0]
            if _remote_code(path):
                raise CheckpointError(
                    f"cannot load the remote-code model in {path} (e.g. the HF port chuhac/BiomedCLIP-vit-bert-hf) "
                    f"under transformers {transformers.__version__}: {type(e).__name__}: {first}; use BiomedCLIP "
                    f"as released instead (microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224: "
                    f"open_clip_config.json + open_clip_pytorch_model.bin, docs/pretrained-weights.md)") from e
            raise CheckpointError(f"cannot load the teacher from {path}: {type(e).__name__}: {first}") from e
        pre = _read_preprocessor(path)
        vision = getattr(model.config, "vision_config", None)
        image_size = pre.get("image_size") or getattr(vision, "image_size", None) or 224
        if logit_scale is None:
            ls = getattr(model, "logit_scale", None)
            if isinstance(ls, torch.Tensor):
                logit_scale = float(ls.detach().float().exp().reshape(-1)[0])
            elif getattr(model.config, "logit_scale_init_value", None) is not None:
                logit_scale = math.exp(float(model.config.logit_scale_init_value))
            else:
                raise CheckpointError(f"teacher model in {path} has no logit_scale; pass logit_scale=...")
        teacher = cls(model, tokenizer, name=name or path.name, logit_scale=logit_scale, image_size=image_size,
                      mean=pre.get("mean", CLIP_MEAN), std=pre.get("std", CLIP_STD), max_length=max_length)
        return teacher.to(device)  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> CLIPTeacher:
        self.model.to(device)
        self._device = torch.device(device)
        return self

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = image_batch(pixel_values)
        if self.model.training:
            self.model.eval()
        dtype = next(self.model.parameters()).dtype
        out = self.model.get_image_features(pixel_values=pixel_values.to(self._device, dtype))
        return F.normalize(features(out).float(), dim=-1)

    @torch.no_grad()
    def encode_tokens(self, encodings: Sequence[Encoding]) -> torch.Tensor:
        if self.model.training:
            self.model.eval()
        tok = self.pad(encodings)
        kwargs = {k: v.to(self._device) for k, v in tok.items() if k in self._text_args}
        out = self.model.get_text_features(**kwargs)
        return F.normalize(features(out).float(), dim=-1)

