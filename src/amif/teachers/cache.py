"""A teacher's embeddings of whole corpora, computed once (``amif teacher-cache``) and looked up by row.

A row is keyed by ``(corpus, id)``: the corpus name (``data.corpora[i].name``, by default its kind)
and the record id, so ids repeated across corpora (MIMIC-CXR + MedICaT + ROCO) do not collide. A cache
of a CLIP teacher holds one embedding per record, of the image after the teacher preprocessing only
(resize + normalise, no augmentation). This matches the un-cached teacher as long as the teacher
transform given to ``PretrainDataset`` is that same deterministic preprocessing (AMiF's setting); a
teacher that should see augmented crops cannot be cached, and the cache is then an approximation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from amif.data.captions import DEFAULT_MAX_WORDS, clean_caption
from amif.data.transforms import CLIP_MEAN, CLIP_STD
from amif.errors import AmifError, CheckpointError, ConfigError, DataError
from amif.teachers.base import Teacher, TeacherEmbeddings

__all__ = ["CACHE_FORMAT", "CachedTeacher", "build_teacher_cache", "cache_index_path"]

CACHE_FORMAT = "amif-teacher-cache/2"
_OLD_FORMAT = "amif-teacher-cache/1"  # ids only (one corpus); read as corpus ""

Key = tuple[str, str]


def cache_index_path(path: str | Path) -> Path:
    """The JSON side file of a cache: ``teacher.safetensors`` -> ``teacher.json``."""
    return Path(path).with_suffix(".json")


class _CacheItem:
    """One record to cache: its corpus, id, cleaned caption and a function loading its image."""

    __slots__ = ("corpus", "id", "caption", "load")

    def __init__(self, corpus: str, rid: str, caption: str, load: Callable[[], Any]) -> None:
        self.corpus, self.id, self.caption, self.load = corpus, rid, caption, load


def _cache_items(data: Any, root: str | Path | None, corpus: str, max_words: int,
                 image_loader: Callable[[Path], Any] | None) -> tuple[list[_CacheItem], list[str]]:
    """Flatten corpora into cache items: a mapping ``{name: data}``, a ``ConcatDataset``, a
    ``PretrainDataset`` (its ``corpus`` name), a ``Corpus`` or a record list (then ``root`` is needed)."""
    from amif.data.pretrain_corpora import load_record_image

    if isinstance(data, Mapping) or hasattr(data, "datasets"):  # several corpora
        parts = data.items() if isinstance(data, Mapping) else [(corpus, d) for d in data.datasets]
        items: list[_CacheItem] = []
        roots: list[str] = []
        for name, sub in parts:
            more, r = _cache_items(sub, None, str(name), max_words, image_loader)
            items += more
            roots += r
        return items, roots
    if hasattr(data, "records") and hasattr(data, "caption") and hasattr(data, "load_image"):
        ds = data
        name = getattr(ds, "corpus", "") or corpus
        return ([_CacheItem(name, r.id, ds.caption(r), lambda r=r: ds.load_image(r)) for r in ds.records],
                [str(ds.root)])
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
        items.append(_CacheItem(corpus, r.id, caption, lambda r=r: load_record_image(base, r, image_loader)))
    return items, [str(base)]


def _where(key: Key) -> str:
    return f"corpus {key[0]!r} id {key[1]!r}" if key[0] else f"id {key[1]!r}"


def build_teacher_cache(
    teacher: Teacher,
    data: Any,
    root: str | Path | None = None,
    out_path: str | Path = "teacher_cache.safetensors",
    *,
    corpus: str = "",
    batch_size: int = 32,
    max_words: int = DEFAULT_MAX_WORDS,
    image_loader: Callable[[Path], Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Compute the teacher's embeddings of every record once and write them to ``out_path``.

    ``data`` is one corpus (a :class:`PretrainDataset`, a ``Corpus``, or a list of ``CaptionRecord``
    with ``root``; named ``corpus``) or several (a mapping ``{name: corpus}`` or a ``ConcatDataset`` of
    named ``PretrainDataset`` s). The safetensors file holds ``text`` ``[N, D]`` (embedding of the cleaned
    caption) and, for teachers with an image tower, ``image`` ``[N, D]`` (the record's image after the
    teacher preprocessing only). Row ``i`` belongs to ``(corpora[i], ids[i])`` of the JSON side file
    :func:`cache_index_path`, which also holds the teacher name, logit scale and preprocessing. A
    ``(corpus, id)`` pair must be unique. ``progress(done, total)`` is called after each image batch.
    """
    from safetensors.torch import save_file

    out_path = Path(out_path)
    items, roots = _cache_items(data, root, corpus, max_words, image_loader)
    if not items:
        raise DataError("no records to cache", path=", ".join(roots) or None)
    seen: dict[Key, int] = {}
    for i, it in enumerate(items):
        key = (it.corpus, it.id)
        if key in seen:
            raise DataError(f"duplicate record {_where(key)} (rows {seen[key]} and {i}): a cache needs "
                            "unique ids within a corpus", path=", ".join(roots), record=_where(key))
        seen[key] = i

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
    counts = dict.fromkeys(dict.fromkeys(it.corpus for it in items), 0)
    for it in items:
        counts[it.corpus] += 1
    index = {"format": CACHE_FORMAT, "teacher": teacher.name, "logit_scale": float(teacher.logit_scale),
             "image_is_text": not teacher.uses_images, "image_size": teacher.image_size,
             "mean": list(teacher.mean), "std": list(teacher.std), "roots": roots, "count": total,
             "corpus_counts": counts, "corpora": [it.corpus for it in items], "ids": [it.id for it in items]}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    side = cache_index_path(out_path)
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(index), encoding="utf-8")
    os.replace(tmp, out_path)
    os.replace(side_tmp, side)
    return out_path


def _batch_list(batch: Mapping[str, Any], key: str, n: int, default: Sequence[str] | None = None) -> list[str]:
    value = batch.get(key, default)
    if value is None:
        return [""] * n
    return [value] if isinstance(value, str) else [str(v) for v in value]


class CachedTeacher(Teacher):
    """Teacher embeddings read from a cache written by :func:`build_teacher_cache`.

    ``teacher_embeddings(batch)`` returns the rows of ``(batch["corpus"], batch["id"])`` (view 1 and
    text) and of ``batch["id2"]`` (view 2; ``id`` when absent). For a cache of a caption teacher the image
    rows are the text rows. It cannot encode new images or texts.
    """

    uses_images = False

    def __init__(self, ids: Sequence[str], text: torch.Tensor, image: torch.Tensor | None, *, name: str,
                 logit_scale: float, corpora: Sequence[str] | None = None, path: str | Path | None = None,
                 image_size: int = 224, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        super().__init__()
        if image is not None and image.shape != text.shape:
            raise CheckpointError(f"cache tensors differ in shape: image {tuple(image.shape)}, "
                                  f"text {tuple(text.shape)}")
        corpora = [""] * len(ids) if corpora is None else list(corpora)
        if len(ids) != text.shape[0] or len(corpora) != len(ids):
            raise CheckpointError(f"cache has {text.shape[0]} rows but {len(ids)} ids and {len(corpora)} corpora")
        self.ids = list(ids)
        self.corpora = [str(c) for c in corpora]
        self.row = {(c, str(rid)): i for i, (c, rid) in enumerate(zip(self.corpora, self.ids))}
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
        fmt = index.get("format") if isinstance(index, dict) else None
        if fmt not in (CACHE_FORMAT, _OLD_FORMAT) or "text" not in tensors or not isinstance(index.get("ids"), list):
            raise CheckpointError(f"{path} is not an amif teacher cache ({CACHE_FORMAT})")
        teacher = cls(index["ids"], tensors["text"], tensors.get("image"), name=f"cache:{index['teacher']}",
                      logit_scale=index["logit_scale"], corpora=index.get("corpora"), path=path,
                      image_size=index.get("image_size", 224), mean=index.get("mean", CLIP_MEAN),
                      std=index.get("std", CLIP_STD))
        return teacher.to(device)  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> CachedTeacher:
        same = self.image is self.text
        self.text = self.text.to(device)
        self.image = self.text if same else self.image.to(device)
        self._device = torch.device(device)
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: object) -> bool:
        """``(corpus, id)`` or, for rows cached without a corpus name, the bare id."""
        if isinstance(key, tuple):
            return key in self.row or ("", key[1]) in self.row
        return ("", key) in self.row

    def rows(self, ids: Sequence[str] | str, corpora: Sequence[str] | str | None = None) -> torch.Tensor:
        """Row indices of ``(corpus, id)`` pairs (a row cached without a corpus name matches any corpus);
        a missing pair raises a DataError naming the corpus, the id and the cache file."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        if corpora is None or isinstance(corpora, str):
            corpora = [corpora or ""] * len(ids)
        out = []
        for c, rid in zip(corpora, ids):
            key = (str(c), str(rid))
            r = self.row.get(key)
            if r is None:
                r = self.row.get(("", key[1]))
            if r is None:
                raise DataError(f"record {_where(key)} is not in the teacher cache (rebuild it with "
                                "`amif teacher-cache` over every corpus of the run)", path=self.path,
                                record=_where(key))
            out.append(r)
        return torch.tensor(out, dtype=torch.long, device=self.text.device)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise AmifError("a cached teacher cannot encode new images; use teacher_embeddings(batch)")

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise AmifError("a cached teacher cannot encode new texts; use teacher_embeddings(batch)")

    def teacher_embeddings(self, batch: Mapping[str, Any]) -> TeacherEmbeddings:
        if "id" not in batch:
            raise DataError("the batch has no 'id' field: a cached teacher looks rows up by record id")
        ids = _batch_list(batch, "id", 0)
        corpora = _batch_list(batch, "corpus", len(ids))
        r1 = self.rows(ids, corpora)
        r2 = self.rows(_batch_list(batch, "id2", 0), corpora) if "id2" in batch else r1
        return self.image[r1], self.image[r2], self.text[r1]
