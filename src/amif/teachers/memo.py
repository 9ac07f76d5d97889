"""A caption-only teacher with its embeddings memoised per caption."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from amif.teachers.base import CaptionTokenizer, Encoding, Teacher, TeacherEmbeddings, batch_texts
from amif.teachers.caption import CaptionSimilarityTeacher

__all__ = ["MemoCaptionTeacher"]


class MemoCaptionTeacher(Teacher):
    """Wraps a :class:`CaptionSimilarityTeacher`: each distinct caption is encoded once per run.

    The caption teacher's outputs depend on the caption alone, so the memo returns exactly the values
    of encoding it every step, at a fraction of the cost.
    """

    uses_images = False

    def __init__(self, inner: CaptionSimilarityTeacher) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.logit_scale = inner.logit_scale
        self._device = inner.device
        self._memo: dict[str, torch.Tensor] = {}

    def to(self, device: str | torch.device) -> MemoCaptionTeacher:
        self.inner.to(device)
        self._device = torch.device(device)
        self._memo = {k: v.to(device) for k, v in self._memo.items()}
        return self

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.inner.encode_images(pixel_values)

    def caption_tokenizer(self) -> CaptionTokenizer | None:
        return self.inner.caption_tokenizer()

    def _embed(self, texts: list[str], encodings: Sequence[Encoding] | None) -> torch.Tensor:
        """Embeddings of ``texts``; the captions not memoised yet are encoded, from ``encodings``
        (the same captions' tokens) when given, else from their text."""
        new = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if new:
            if encodings is not None:
                first = {}
                for t, e in zip(texts, encodings):
                    first.setdefault(t, e)
                vectors = self.inner.encode_tokens([first[t] for t in new])
            else:
                vectors = self.inner.encode_texts(new)
            for t, e in zip(new, vectors):
                self._memo[t] = e.float()
        return torch.stack([self._memo[t] for t in texts])

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self._embed([str(t) for t in texts], None)

    def encode_tokens(self, encodings: Sequence[Encoding]) -> torch.Tensor:
        return self.inner.encode_tokens(encodings)

    def teacher_embeddings(self, batch: Mapping[str, Any]) -> TeacherEmbeddings:
        v = self._embed(batch_texts(batch), batch.get("teacher_tokens"))
        return v, v, v
