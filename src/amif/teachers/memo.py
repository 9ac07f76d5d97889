"""A caption-only teacher with its embeddings memoised per caption."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from amif.teachers.base import Teacher, TeacherEmbeddings, batch_texts
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

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        new = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if new:
            for t, e in zip(new, self.inner.encode_texts(new)):
                self._memo[t] = e.float()
        return torch.stack([self._memo[t] for t in texts])

    def teacher_embeddings(self, batch: Mapping[str, Any]) -> TeacherEmbeddings:
        v = self.encode_texts(batch_texts(batch))
        return v, v, v
