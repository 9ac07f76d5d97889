"""PyTorch dataset of VQA records: image tensor + normalised question + answer + labels
(batched by :mod:`amif.data.collate`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from amif.answers import normalize_question
from amif.data.images import load_image
from amif.data.records import VQARecord, image_exists, resolve_image
from amif.errors import DataError


class VQADataset(Dataset):
    """Items are dicts: ``pixel_values`` [3, H, W], ``image`` (the record's image path), ``question``,
    ``answer``, ``qid``, ``answer_type``, ``question_type``. With ``blank_images`` every image is a constant (the question-only baseline).
    ``flip[i]`` true mirrors record ``i``'s image left to right (the mirrored copies of
    :mod:`amif.data.mirror`).

    Missing images and empty questions are reported at construction, naming the file and record.
    """

    def __init__(
        self,
        root: str | Path,
        records: Sequence[VQARecord],
        transform: Callable[[Any], torch.Tensor],
        *,
        image_size: int,
        blank_images: bool = False,
        source: str | None = None,
        flip: Sequence[bool] | None = None,
    ):
        self.root = Path(root)
        self.records = list(records)
        self.transform = transform
        self.image_size = image_size
        self.blank_images = blank_images
        self.source = source or str(self.root)
        self.flip = list(flip) if flip is not None else [False] * len(self.records)
        if len(self.flip) != len(self.records):
            raise ValueError(f"flip has {len(self.flip)} entries for {len(self.records)} records")
        self.questions = []
        for r in self.records:
            try:
                self.questions.append(normalize_question(r.question))
            except ValueError as e:
                raise DataError(f"question is empty ({e})", path=self.source, record=f"qid {r.qid!r}") from e
            if not blank_images and not image_exists(self.root, r.image):
                raise DataError(
                    f"image {r.image!r} not found under {self.root}", path=self.source, record=f"qid {r.qid!r}"
                )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        if self.blank_images:
            pixels = torch.zeros(3, self.image_size, self.image_size)
        else:
            path = resolve_image(self.root, r.image)
            try:
                pixels = self.transform(load_image(path))
            except DataError as e:
                raise DataError(str(e), path=self.source, record=f"qid {r.qid!r}") from e
            if self.flip[index]:
                pixels = pixels.flip(-1)
        return {
            "pixel_values": pixels,
            "blank": self.blank_images,
            "image": r.image,
            "question": self.questions[index],
            "answer": r.answer,
            "qid": r.qid,
            "answer_type": r.answer_type,
            "question_type": r.question_type,
        }
