"""Batch collation for the DataLoader workers: images stacked, texts tokenised.

:class:`VQACollate` and :class:`PretrainCollate` tokenise in the collate, so that the work runs in
the DataLoader's worker processes and the training step receives token ids. :func:`collate_vqa`
stacks a VQA batch without tokenising it (evaluation and inference tokenise with the model).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from amif.answers import normalize_answer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["PretrainCollate", "VQACollate", "caption_key", "collate_vqa", "tokenize"]


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``[CLS] text [SEP]`` rows, truncated to ``max_length`` tokens
    and padded to the longest row."""
    enc = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def collate_vqa(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the images of :class:`~amif.data.vqa_dataset.VQADataset` items; keep strings and labels as lists.

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


class VQACollate:
    """:func:`collate_vqa` plus the token ids a training or validation step needs: ``question_ids`` /
    ``question_mask`` (the normalised questions, at most ``max_question_length`` tokens) and
    ``answer_ids`` / ``answer_mask`` (the normalised answers, the form the candidate list holds and
    ranking scores, at most ``max_answer_length`` tokens)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_question_length: int, max_answer_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_question_length = max_question_length
        self.max_answer_length = max_answer_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        out = collate_vqa(items)
        out["question_ids"], out["question_mask"] = tokenize(self.tokenizer, out["question"], self.max_question_length)
        answers = [normalize_answer(a) for a in out["answer"]]
        out["answer_ids"], out["answer_mask"] = tokenize(self.tokenizer, answers, self.max_answer_length)
        return out


def caption_key(caption: str) -> int:
    """A stable signed 64-bit key of a caption (equal captions, equal keys; same on every process)."""
    return int.from_bytes(hashlib.blake2b(caption.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class PretrainCollate:
    """Collate :class:`~amif.data.pretrain_corpora.PretrainDataset` items into a pre-training batch.

    Stacks ``image1``/``image2`` (and ``teacher_image1``/``teacher_image2`` when present), tokenises the
    cleaned captions (``[CLS] ... [SEP]``, at most ``max_length`` tokens, padded to the longest) into
    ``input_ids``/``attention_mask``, and keeps ``caption``, ``id``, ``id2``, ``corpus`` (lists), ``index``,
    ``caption_key`` (LongTensors; equal captions have equal keys, for retrieval positives and for
    keeping duplicates out of the hard negatives) and ``study_key`` (equal for the views of one study of
    one corpus). With ``teacher_tokenizer`` (a teacher's ``caption_tokenizer()``), ``teacher_tokens`` holds
    each caption's unpadded teacher tokens, so that an online teacher's tokenisation also runs here.

    When at least one item has a ``negative_caption`` (a counterfactual caption of its image), the batch
    also has ``negative_ids``/``negative_mask`` (one row per item; an item without one gets an empty
    caption), ``negative_valid`` (bool [B]: whether the row is a real negative) and ``negative_key``
    (caption keys of the rows), for the counterfactual image-text matching pairs
    (``losses.itm_counterfactuals``). A batch without any has none of these keys.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 120,
                 teacher_tokenizer: Callable[[str], Mapping[str, Sequence[int]]] | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.teacher_tokenizer = teacher_tokenizer

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("empty batch")
        out: dict[str, Any] = {}
        for key in ("image1", "image2", "teacher_image1", "teacher_image2"):
            if key in items[0]:
                out[key] = torch.stack([it[key] for it in items])
        captions = [str(it["caption"]) for it in items]
        out["input_ids"], out["attention_mask"] = tokenize(self.tokenizer, captions, self.max_length)
        out["caption"] = captions
        if self.teacher_tokenizer is not None:
            out["teacher_tokens"] = [self.teacher_tokenizer(c) for c in captions]
        out["id"] = [str(it.get("id", i)) for i, it in enumerate(items)]
        out["id2"] = [str(it.get("id2", it.get("id", i))) for i, it in enumerate(items)]
        out["index"] = torch.tensor([int(it.get("index", i)) for i, it in enumerate(items)], dtype=torch.long)
        out["caption_key"] = torch.tensor([caption_key(c) for c in captions], dtype=torch.long)
        out["corpus"] = [str(it.get("corpus", "")) for it in items]
        studies = [f"{c}\x1f{it.get('study_id', it.get('id', i))}" for i, (c, it) in enumerate(zip(out["corpus"], items))]
        out["study_key"] = torch.tensor([caption_key(k) for k in studies], dtype=torch.long)
        negatives = [it.get("negative_caption") for it in items]
        if any(negatives):
            texts = [str(n) if n else "" for n in negatives]
            out["negative_ids"], out["negative_mask"] = tokenize(self.tokenizer, texts, self.max_length)
            out["negative_valid"] = torch.tensor([bool(n) for n in negatives], dtype=torch.bool)
            out["negative_key"] = torch.tensor([caption_key(t) for t in texts], dtype=torch.long)
        return out
