"""The teacher interface and helpers shared by the backends.

AMiF softens its contrastive targets with a frozen teacher: the soft label of a pair is a softmax over
``logit_scale * <u, v>`` of the teacher's L2-normalised embeddings. The pre-training step asks a teacher
for ``teacher_embeddings(batch) -> (u_view1, u_view2, v_text)`` (each ``[B, D]``, L2-normalised) from the
batch dict built by :class:`amif.data.pretrain_corpora.PretrainDataset` and the collate function.

Teachers are plain objects (not ``nn.Module``) so their weights never end up in a student checkpoint;
call ``teacher.to(device)`` yourself. All outputs are float32 on the teacher's device, computed under
``torch.no_grad()`` with the model frozen in eval mode.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from amif.data.transforms import CLIP_MEAN, CLIP_STD
from amif.errors import AmifError, CheckpointError, DataError

DEFAULT_TEXT_TOKENS = 120

TeacherEmbeddings = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Encoding = Mapping[str, Sequence[int]]
"""One caption's teacher tokens, unpadded: ``input_ids``, ``attention_mask`` (and ``token_type_ids``)."""


@dataclass(frozen=True)
class CaptionTokenizer:
    """One caption -> its teacher tokens (truncated to ``max_length``, not padded).

    Picklable, so that the pre-training collate runs it in the DataLoader workers; the teacher pads the
    tokens of the captions it encodes together (:func:`pad_encodings`), which gives the same ids and
    masks as tokenising those captions in one padded call.
    """

    tokenizer: Any
    max_length: int

    def __call__(self, caption: str) -> dict[str, list[int]]:
        enc = self.tokenizer(str(caption), truncation=True, max_length=self.max_length)
        return {k: list(v) for k, v in enc.items()}


def pad_encodings(encodings: Sequence[Encoding], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad unpadded encodings to the longest: ``input_ids`` with ``pad_id``, every other field with 0."""
    if not encodings:
        raise ValueError("no texts to encode")
    n = max(len(e["input_ids"]) for e in encodings)
    out = {}
    for key in encodings[0]:
        fill = pad_id if key == "input_ids" else 0
        rows = []
        for e in encodings:
            row, pad = list(e[key]), [fill] * (n - len(e[key]))
            rows.append(pad + row if side == "left" else row + pad)
        out[key] = torch.tensor(rows, dtype=torch.long)
    return out


def features(out: Any) -> torch.Tensor:
    """The embedding tensor from what ``get_*_features`` returned (a tensor or a model output)."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor):
        return out[1]
    raise CheckpointError(f"cannot find the embedding tensor in the model output of type {type(out).__name__}")


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def batch_texts(batch: Mapping[str, Any]) -> list[str]:
    texts = batch.get("caption")
    if texts is None:
        raise DataError("the batch has no 'caption' field")
    if isinstance(texts, str):
        return [texts]
    return [str(t) for t in texts]


class Teacher(ABC):
    """A frozen soft-label teacher producing L2-normalised embeddings.

    Attributes: ``name``; ``logit_scale`` (the multiplier ``s`` of the teacher similarities, not its
    log); ``image_size``, ``mean``, ``std`` (the teacher's image preprocessing, for
    ``build_teacher_transform``); ``uses_images`` (whether :meth:`teacher_embeddings` reads
    ``teacher_image1``/``teacher_image2`` from the batch).
    """

    name: str = "teacher"
    logit_scale: float = 1.0
    image_size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    uses_images: bool = True

    def __init__(self) -> None:
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: str | torch.device) -> Teacher:
        """Move the teacher to ``device`` (in place); returns self."""
        self._device = torch.device(device)
        return self

    @abstractmethod
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` teacher-preprocessed images -> ``[B, D]`` L2-normalised embeddings."""

    def caption_tokenizer(self) -> CaptionTokenizer | None:
        """What the data workers run on each caption for :meth:`encode_tokens` (the batch's
        ``teacher_tokens``); None for a teacher that reads no caption tokens."""
        tokenizer = getattr(self, "tokenizer", None)
        length = int(getattr(self, "max_length", DEFAULT_TEXT_TOKENS))
        return CaptionTokenizer(tokenizer, length) if tokenizer is not None else None

    def pad(self, encodings: Sequence[Encoding]) -> dict[str, torch.Tensor]:
        """``encodings`` padded as the teacher's tokenizer pads (side and pad id)."""
        tokenizer = self.tokenizer  # type: ignore[attr-defined]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return pad_encodings(encodings, int(pad_id), getattr(tokenizer, "padding_side", "right"))

    def encode_tokens(self, encodings: Sequence[Encoding]) -> torch.Tensor:
        """Captions tokenised by :meth:`caption_tokenizer` -> ``[B, D]`` L2-normalised embeddings."""
        raise AmifError(f"teacher {self.name!r} does not encode caption tokens")

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions (already cleaned) -> ``[B, D]`` L2-normalised embeddings."""
        tokenize = self.caption_tokenizer()
        if tokenize is None:
            raise AmifError(f"teacher {self.name!r} cannot encode new texts")
        return self.encode_tokens([tokenize(t) for t in text_list(texts)])

    def batch_text_embeddings(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The batch's caption embeddings, from its ``teacher_tokens`` when the collate made them."""
        tokens = batch.get("teacher_tokens")
        return self.encode_tokens(tokens) if tokens is not None else self.encode_texts(batch_texts(batch))

    def teacher_embeddings(self, batch: Mapping[str, Any]) -> TeacherEmbeddings:
        """``(u_view1, u_view2, v_text)`` for a collated pre-training batch."""
        for key in ("teacher_image1", "teacher_image2"):
            if key not in batch:
                raise DataError(
                    f"the batch has no {key!r}: give PretrainDataset a teacher_transform "
                    f"(build_teacher_transform({self.image_size}, mean, std)) for teacher {self.name!r}"
                )
        u1 = self.encode_images(batch["teacher_image1"])
        u2 = self.encode_images(batch["teacher_image2"])
        return u1, u2, self.batch_text_embeddings(batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, logit_scale={self.logit_scale:.4g})"



_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json", "spiece.model",
                    "sentencepiece.bpe.model")


def check_model_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise CheckpointError(f"{what} folder {path} not found")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{what} folder {path} has no config.json")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise CheckpointError(f"{what} folder {path} has no weights (expected one of {', '.join(_WEIGHT_FILES)})")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise CheckpointError(f"{what} folder {path} has no tokenizer files (expected one of "
                              f"{', '.join(_TOKENIZER_FILES)})")


def call_params(fn: Callable[..., Any]) -> set[str]:
    """Named parameters of ``fn`` (not ``**kwargs``): only these tokenizer outputs are passed."""
    return {n for n, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}



def image_batch(pixel_values: torch.Tensor) -> torch.Tensor:
    """``pixel_values`` checked to be ``[B, 3, H, W]``."""
    if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
        raise DataError(f"teacher images must be [B, 3, H, W], got {tuple(pixel_values.shape)}")
    return pixel_values


def text_list(texts: Sequence[str]) -> list[str]:
    """The captions as a non-empty list."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("no texts to encode")
    return texts
