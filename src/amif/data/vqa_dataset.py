"""PyTorch dataset of VQA records: image tensor + normalised question + answer + labels."""

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


def collate_vqa(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; keep strings and labels as lists (tokenisation happens in the model's module).

    When every item is a blank image (the question-only baseline), ``pixel_values`` holds that one
    image, ``[1, 3, H, W]``: the model encodes it once and shares it across the questions, which gives
    the same outputs and gradients as encoding B identical images, at a fraction of the cost.

    Otherwise ``image_index`` [B] gives each item the position of the first item with the same image
    file and identical pixels (augmented copies differ and keep their own), so that evaluation encodes
    each distinct image of the batch once (``AMiFVQA.fuse``).
    """
    shared = bool(items) and all(it.get("blank", False) for it in items)
    pixels = items[0]["pixel_values"][None] if shared else torch.stack([it["pixel_values"] for it in items])
    out: dict[str, Any] = {"pixel_values": pixels}
    if not shared:
        out["image_index"] = _first_identical_image(items)
    for key in ("question", "answer", "qid", "answer_type", "question_type"):
        out[key] = [it[key] for it in items]
    return out


def _first_identical_image(items: list[dict[str, Any]]) -> torch.Tensor:
    index = list(range(len(items)))
    seen: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if it.get("image") is None:
            continue
        same = seen.setdefault(str(it["image"]), [])
        index[i] = next((j for j in same if torch.equal(items[j]["pixel_values"], it["pixel_values"])), i)
        if index[i] == i:
            same.append(i)
    return torch.tensor(index, dtype=torch.long)
