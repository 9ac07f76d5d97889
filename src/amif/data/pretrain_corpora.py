"""Readers for the image-caption pre-training corpora, multi-view pairing and the pre-training dataset.

Each reader turns one corpus, in its published layout, into :class:`~amif.data.records.CaptionRecord`
objects whose image paths are relative to the corpus root. Readers return a :class:`Corpus`
``(root, records, skipped)``:

=================  ===========================================================================
reader             layout (file names are options)
=================  ===========================================================================
``read_roco``      ``training.csv`` with ``image_path`` (or ``name``) and ``text`` (or ``caption``);
                   images under ``images/``
``read_medicat``   ``training.json`` (JSON Lines) with ``pdf_hash``, ``fig_uri``, ``s2_caption``;
                   image ``figures/{pdf_hash}_{fig_uri}``
``read_mimic_cxr`` ``training_mv.csv`` (one row per study: ``image_path`` and ``view_type``
                   ';'-separated and aligned, ``report_content``) or the single-view ``training.csv``
``read_pmc_oa``    ``train.jsonl`` with ``image`` and ``caption``; images under ``images/`` (or
                   ``caption_T060_filtered_top4_sep_v0_subfigures/``)
``read_caption_folder``  the project's own ``captions_{split}.jsonl``
=================  ===========================================================================

Bad rows (empty caption after cleaning, missing image, malformed row, duplicate id) raise a
:class:`~amif.errors.DataError` naming the file and the row, or, with ``skip_bad=True``, are skipped and
recorded in ``Corpus.skipped`` (and logged), never dropped silently. Image paths that escape the root
always raise. See ``docs/pretraining-data.md``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from amif.data.captions import DEFAULT_MAX_WORDS, clean_caption
from amif.data.records import CaptionRecord, check_relative_path, parse_caption_record
from amif.errors import DataError

__all__ = [
    "CORPUS_READERS",
    "Corpus",
    "PretrainDataset",
    "Skip",
    "SkipReport",
    "group_views",
    "load_record_image",
    "read_caption_folder",
    "read_corpus",
    "read_medicat",
    "read_mimic_cxr",
    "read_pmc_oa",
    "read_roco",
    "select_two_views",
]

log = logging.getLogger(__name__)

# Kinds of skipped rows (SkipReport.by_kind keys).
EMPTY_CAPTION = "empty caption"
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
MALFORMED = "malformed row"
DUPLICATE_ID = "duplicate id"


# --------------------------------------------------------------------------------------------------
# Skip bookkeeping
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """One skipped row: the file, the row/record, the kind of problem and a detail message."""

    path: str
    record: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"file {self.path}, record {self.record}: {self.reason}"


@dataclass
class SkipReport:
    """Every row skipped because ``skip_bad=True`` was asked for, with where and why."""

    items: list[Skip] = field(default_factory=list)

    def add(self, path: object, record: object, kind: str, reason: str) -> None:
        self.items.append(Skip(str(path), str(record), kind, reason))

    def extend(self, other: SkipReport) -> None:
        self.items.extend(other.items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Skip]:
        return iter(self.items)

    @property
    def count(self) -> int:
        return len(self.items)

    def by_kind(self) -> dict[str, int]:
        """Number of skipped rows per kind (``"empty caption"``, ``"missing image"``, ...)."""
        out: dict[str, int] = {}
        for s in self.items:
            out[s.kind] = out.get(s.kind, 0) + 1
        return out

    def summary(self, limit: int = 5) -> str:
        """One readable paragraph: the counts per kind and the first ``limit`` skipped rows."""
        if not self.items:
            return "no rows skipped"
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind().items()))
        lines = [f"skipped {len(self.items)} row(s): {kinds}"]
        lines += [f"  {s}" for s in self.items[:limit]]
        if len(self.items) > limit:
            lines.append(f"  ... and {len(self.items) - limit} more")
        return "\n".join(lines)


class Corpus(NamedTuple):
    """What a reader returns: image paths in ``records`` are relative to ``root``."""

    root: Path
    records: list[CaptionRecord]
    skipped: SkipReport


class _Collector:
    """Collects records of one file, raising or skipping bad rows as asked."""

    def __init__(self, root: Path, path: Path, *, skip_bad: bool, check_images: bool, max_words: int) -> None:
        self.root = root
        self.path = path
        self.skip_bad = skip_bad
        self.check_images = check_images
        self.max_words = max_words
        self.records: list[CaptionRecord] = []
        self.skipped = SkipReport()
        self._ids: dict[str, str] = {}

    def bad(self, where: str, kind: str, reason: str) -> None:
        """Raise a DataError for the row, or record the skip."""
        if not self.skip_bad:
            raise DataError(reason, path=self.path, record=where)
        self.skipped.add(self.path, where, kind, reason)

    def caption_ok(self, caption: Any, where: str) -> str | None:
        """The caption stripped, or None (after raising/skipping) when it is empty after cleaning."""
        if caption is None:
            self.bad(where, EMPTY_CAPTION, "caption is missing")
            return None
        if not isinstance(caption, str):
            self.bad(where, MALFORMED, f"caption must be a string, got {type(caption).__name__}")
            return None
        try:
            clean_caption(caption, self.max_words)
        except ValueError as e:
            self.bad(where, EMPTY_CAPTION, str(e))
            return None
        return caption.strip()

    def add(self, where: str, rec_id: str, image: str, caption: Any, **kw: Any) -> bool:
        """Validate and keep one record; False when it was skipped."""
        text = self.caption_ok(caption, where)
        if text is None:
            return False
        if not image:
            self.bad(where, MISSING_IMAGE, "empty image path")
            return False
        check_relative_path(image, path=self.path, record=where)
        if self.check_images and not (self.root / image).is_file():
            self.bad(where, MISSING_IMAGE, f"image {image!r} not found under {self.root}")
            return False
        if rec_id in self._ids:
            self.bad(where, DUPLICATE_ID, f"duplicate id {rec_id!r} (first at {self._ids[rec_id]})")
            return False
        self._ids[rec_id] = where
        self.records.append(CaptionRecord(id=rec_id, image=image, caption=text, **kw))
        return True

    def corpus(self) -> Corpus:
        if self.skipped:
            log.warning("%s: %s", self.path, self.skipped.summary())
        return Corpus(self.root, self.records, self.skipped)


def _under(image_dir: str, name: str) -> str:
    """``image_dir/name`` unless ``name`` already starts with ``image_dir/`` (or image_dir is empty)."""
    name = name.strip().replace("\\", "/")
    d = image_dir.strip("/")
    if not d or name.startswith(d + "/"):
        return name
    return f"{d}/{name}"


def _open_csv(path: Path) -> tuple[Iterator[dict[str, str]], list[str]]:
    if not path.is_file():
        raise DataError("file not found", path=path)
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))
    f = path.open(encoding="utf-8-sig", newline="")
    reader = csv.DictReader(f)
    try:
        header = list(reader.fieldnames or [])
    except csv.Error as e:
        f.close()
        raise DataError(f"malformed CSV header: {e}", path=path) from e

    def rows() -> Iterator[dict[str, str]]:
        with f:
            try:
                yield from reader
            except csv.Error as e:
                raise DataError(f"malformed CSV: {e}", path=path, record=f"row {reader.line_num}") from e

    return rows(), [h.strip() for h in header]


def _pick_column(header: list[str], candidates: Sequence[str], path: Path, what: str) -> str:
    for c in candidates:
        if c in header:
            return c
    raise DataError(f"no {what} column: expected one of {list(candidates)}, found {header}", path=path)


def _iter_json(path: Path, col: _Collector) -> Iterator[tuple[str, Any]]:
    """Yield (where, object) from a JSON Lines file (or a JSON list); malformed lines go through ``col.bad``."""
    if not path.is_file():
        raise DataError("file not found", path=path)
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}", path=path) from e
        for i, obj in enumerate(data, start=1):
            yield f"#{i}", obj
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            col.bad(where, MALFORMED, f"malformed JSON: {e.msg} (column {e.colno})")
            continue
        if not isinstance(obj, dict):
            col.bad(where, MALFORMED, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield where, obj


def _stop(max_rows: int | None, n: int) -> bool:
    return max_rows is not None and n > max_rows


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def read_roco(
    root: str | Path,
    *,
    csv_name: str = "training.csv",
    image_dir: str = "images",
    split: str = "train",
    skip_bad: bool = False,
    check_images: bool = True,
    max_words: int = DEFAULT_MAX_WORDS,
    max_rows: int | None = None,
) -> Corpus:
    """Read ROCO: ``root/csv_name`` with an image column (``image_path`` or ``name``) and a caption column
    (``text`` or ``caption``); an ``id`` column is used when present. Images are ``image_dir/<value>``
    (a value already starting with ``image_dir/`` is kept; ``image_dir=""`` means relative to ``root``).
    Record ids are ``roco:<id or image path>``."""
    root = Path(root)
    path = root / csv_name
    rows, header = _open_csv(path)
    img_col = _pick_column(header, ("image_path", "name"), path, "image")
    cap_col = _pick_column(header, ("text", "caption"), path, "caption")
    col = _Collector(root, path, skip_bad=skip_bad, check_images=check_images, max_words=max_words)
    for n, row in enumerate(rows, start=1):
        if _stop(max_rows, n):
            break
        where = f"row {n}"
        name = (row.get(img_col) or "").strip()
        image = _under(image_dir, name) if name else ""
        rid = (row.get("id") or "").strip() or image
        col.add(where, f"roco:{rid}", image, row.get(cap_col), split=split, extra={"corpus": "roco"})
    return col.corpus()


def read_medicat(
    root: str | Path,
    *,
    jsonl_name: str = "training.json",
    image_dir: str = "figures",
    split: str = "train",
    skip_bad: bool = False,
    check_images: bool = True,
    max_words: int = DEFAULT_MAX_WORDS,
    max_rows: int | None = None,
) -> Corpus:
    """Read MedICaT: JSON Lines ``root/jsonl_name`` with ``pdf_hash``, ``fig_uri`` and ``s2_caption``;
    the image is ``image_dir/{pdf_hash}_{fig_uri}``. Record ids are ``medicat:{pdf_hash}_{fig_uri}``."""
    root = Path(root)
    path = root / jsonl_name
    col = _Collector(root, path, skip_bad=skip_bad, check_images=check_images, max_words=max_words)
    for n, (where, obj) in enumerate(_iter_json(path, col), start=1):
        if _stop(max_rows, n):
            break
        missing = [k for k in ("pdf_hash", "fig_uri", "s2_caption") if k not in obj]
        if missing:
            col.bad(where, MALFORMED, f"missing field(s) {', '.join(missing)}")
            continue
        pdf_hash, fig_uri = str(obj["pdf_hash"]).strip(), str(obj["fig_uri"]).strip()
        if not pdf_hash or not fig_uri:
            col.bad(where, MISSING_IMAGE, "empty pdf_hash or fig_uri")
            continue
        stem = f"{pdf_hash}_{fig_uri}"
        col.add(where, f"medicat:{stem}", _under(image_dir, stem), obj["s2_caption"], split=split,
                extra={"corpus": "medicat"})
    return col.corpus()


def read_pmc_oa(
    root: str | Path,
    *,
    jsonl_name: str = "train.jsonl",
    image_dir: str = "images",
    split: str = "train",
    skip_bad: bool = False,
    check_images: bool = True,
    max_words: int = DEFAULT_MAX_WORDS,
    max_rows: int | None = None,
) -> Corpus:
    """Read PMC-OA: JSON Lines ``root/jsonl_name`` with ``image`` and ``caption``; images under ``image_dir``
    (``images`` or ``caption_T060_filtered_top4_sep_v0_subfigures``). Record ids are ``pmc_oa:<image>``."""
    root = Path(root)
    path = root / jsonl_name
    col = _Collector(root, path, skip_bad=skip_bad, check_images=check_images, max_words=max_words)
    for n, (where, obj) in enumerate(_iter_json(path, col), start=1):
        if _stop(max_rows, n):
            break
        missing = [k for k in ("image", "caption") if k not in obj]
        if missing:
            col.bad(where, MALFORMED, f"missing field(s) {', '.join(missing)}")
            continue
        name = str(obj["image"] or "").strip()
        image = _under(image_dir, name) if name else ""
        col.add(where, f"pmc_oa:{name}", image, obj["caption"], split=split, extra={"corpus": "pmc_oa"})
    return col.corpus()


def _mimic_rel_path(p: str, root_abs: Path, base_abs: Path, path: Path, where: str) -> str:
    """A MIMIC image path relative to the root: absolute paths must lie under ``base_abs``."""
    if os.path.isabs(p) or PurePosixPath(p).is_absolute():
        norm = Path(os.path.normpath(p))
        try:
            rel = norm.relative_to(base_abs)
        except ValueError:
            raise DataError(
                f"absolute image path {p!r} is not under {base_abs} (pass abs_prefix=<folder the CSV's "
                "paths were written under> to map them onto the corpus root)", path=path, record=where,
            ) from None
        return check_relative_path(rel.as_posix(), path=path, record=where)
    return check_relative_path(p.replace("\\", "/"), path=path, record=where)


def read_mimic_cxr(
    root: str | Path,
    *,
    csv_name: str | None = None,
    multi_view: bool | None = None,
    abs_prefix: str | Path | None = None,
    split: str = "train",
    skip_bad: bool = False,
    check_images: bool = True,
    max_words: int = DEFAULT_MAX_WORDS,
    max_rows: int | None = None,
) -> Corpus:
    """Read MIMIC-CXR as the study-level CSV (one row per study) or the single-view CSV.

    ``csv_name`` defaults to ``training_mv.csv`` when ``multi_view`` is not False and that file exists,
    else ``training.csv``. Columns: ``image_path`` (';'-separated paths of the study's images),
    ``report_content`` and, multi-view, ``view_type`` (';'-separated, aligned with the images). A
    ``study_id`` column is used when present, else the row number. One record per image, with
    ``study_id = "mimic:<study>"``, ``view`` = its view type and id ``mimic:<study>:<k>``.

    Image paths may be relative to ``root`` or absolute; absolute ones must lie under ``abs_prefix``
    (default: ``root``) and are stored relative to it. A missing image skips only that image.
    """
    root = Path(root)
    if csv_name is None:
        csv_name = "training_mv.csv" if multi_view is not False and (root / "training_mv.csv").is_file() \
            else "training.csv"
    path = root / csv_name
    rows, header = _open_csv(path)
    _pick_column(header, ("image_path",), path, "image")
    _pick_column(header, ("report_content",), path, "report")
    if multi_view is None:
        multi_view = "view_type" in header
    elif multi_view and "view_type" not in header:
        raise DataError(f"multi-view CSV needs a 'view_type' column, found {header}", path=path)
    root_abs = Path(os.path.abspath(root))
    base_abs = Path(os.path.normpath(os.path.abspath(abs_prefix))) if abs_prefix is not None else root_abs
    col = _Collector(root, path, skip_bad=skip_bad, check_images=check_images, max_words=max_words)
    for n, row in enumerate(rows, start=1):
        if _stop(max_rows, n):
            break
        where = f"row {n}"
        report = col.caption_ok(row.get("report_content"), where)
        if report is None:
            continue
        images = [p.strip() for p in (row.get("image_path") or "").strip().rstrip(";").split(";")]
        if images == [""]:
            col.bad(where, MISSING_IMAGE, "empty image_path")
            continue
        views: list[str | None] = [None] * len(images)
        if multi_view:
            vt = [v.strip() for v in (row.get("view_type") or "").strip().rstrip(";").split(";")]
            if len(vt) != len(images):
                col.bad(where, MALFORMED, f"{len(images)} image path(s) but {len(vt)} view type(s)")
                continue
            views = [v or None for v in vt]
        study = (row.get("study_id") or "").strip() or f"row{n}"
        for k, (p, view) in enumerate(zip(images, views)):
            w = f"{where} (image {k + 1})" if len(images) > 1 else where
            rel = _mimic_rel_path(p, root_abs, base_abs, path, w) if p else ""
            col.add(w, f"mimic:{study}:{k}", rel, report, split=split, study_id=f"mimic:{study}", view=view,
                    extra={"corpus": "mimic_cxr"})
    return col.corpus()


def read_caption_folder(
    root: str | Path,
    split: str = "train",
    *,
    skip_bad: bool = False,
    check_images: bool = True,
    max_words: int = DEFAULT_MAX_WORDS,
    max_rows: int | None = None,
) -> Corpus:
    """Read the project's own ``root/captions_{split}.jsonl`` (or ``.json``); ids are kept as written."""
    root = Path(root)
    path = next((root / n for n in (f"captions_{split}.jsonl", f"captions_{split}.json") if (root / n).is_file()),
                None)
    if path is None:
        raise DataError(f"no captions_{split}.jsonl in the dataset folder", path=root)
    col = _Collector(root, path, skip_bad=skip_bad, check_images=check_images, max_words=max_words)
    for n, (where, obj) in enumerate(_iter_json(path, col), start=1):
        if _stop(max_rows, n):
            break
        if isinstance(obj.get("image"), str):
            check_relative_path(obj["image"], path=path, record=where)  # never skipped
        if isinstance(obj.get("caption"), str) and not obj["caption"].strip():
            col.bad(where, EMPTY_CAPTION, "field 'caption' is empty")
            continue
        try:
            rec = parse_caption_record(obj, path, where)
        except DataError as e:
            if not skip_bad:
                raise
            col.bad(where, MALFORMED, str(e))
            continue
        col.add(where, rec.id, rec.image, rec.caption, split=rec.split, study_id=rec.study_id, view=rec.view,
                extra=rec.extra)
    return col.corpus()


CORPUS_READERS: dict[str, Callable[..., Corpus]] = {
    "roco": read_roco,
    "medicat": read_medicat,
    "mimic_cxr": read_mimic_cxr,
    "pmc_oa": read_pmc_oa,
    "captions": read_caption_folder,
}


def read_corpus(kind: str, root: str | Path, **options: Any) -> Corpus:
    """Read a corpus by name (one of :data:`CORPUS_READERS`), passing ``options`` to its reader."""
    key = kind.lower().replace("-", "_")
    if key == "mimic":
        key = "mimic_cxr"
    if key not in CORPUS_READERS:
        raise DataError(f"unknown corpus kind {kind!r}; known: {sorted(CORPUS_READERS)}", path=root)
    return CORPUS_READERS[key](root, **options)


# --------------------------------------------------------------------------------------------------
# Multi-view pairing
# --------------------------------------------------------------------------------------------------


def group_views(records: Sequence[CaptionRecord]) -> list[list[CaptionRecord]]:
    """Group records by ``study_id`` (first-appearance order); a record without one is its own group."""
    groups: list[list[CaptionRecord]] = []
    index: dict[str, int] = {}
    for r in records:
        if r.study_id is None:
            groups.append([r])
            continue
        if r.study_id not in index:
            index[r.study_id] = len(groups)
            groups.append([])
        groups[index[r.study_id]].append(r)
    return groups


def select_two_views(group: Sequence[CaptionRecord], rng: Any = None) -> tuple[CaptionRecord, CaptionRecord]:
    """Pick the two images of one training pair from a study.

    Two images of different view types when the group has at least two (known, case-insensitive) view
    types; else two random distinct images; a single image is returned twice (the caller augments it
    twice). ``rng`` is a ``random.Random`` (default: the ``random`` module, which DataLoader workers seed).
    """
    if not group:
        raise ValueError("empty view group")
    if len(group) == 1:
        return group[0], group[0]
    rng = random if rng is None else rng
    by_view: dict[str, list[CaptionRecord]] = {}
    for r in group:
        if r.view is not None and r.view.strip():
            by_view.setdefault(r.view.strip().upper(), []).append(r)
    if len(by_view) >= 2:
        v1, v2 = rng.sample(sorted(by_view), 2)
        return rng.choice(by_view[v1]), rng.choice(by_view[v2])
    i, j = rng.sample(range(len(group)), 2)
    return group[i], group[j]


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


def _default_loader(path: Path) -> Any:
    from amif.data.images import load_image

    return load_image(path)


def load_record_image(root: str | Path, r: CaptionRecord, loader: Callable[[Path], Any] | None = None) -> Any:
    """Load one record's image (``root/r.image``) as an RGB PIL image with ``amif.data.images.load_image``
    (or ``loader``); any failure raises a DataError naming the file and the record id."""
    where = f"id {r.id!r}"
    check_relative_path(r.image, path=root, record=where)
    file = Path(root) / r.image
    try:
        img = (loader or _default_loader)(file)
    except DataError as e:
        if e.record is not None:
            raise
        raise DataError(f"cannot read image: {e}", path=file, record=where) from e
    except Exception as e:  # PIL and DICOM readers raise many types
        raise DataError(f"cannot read image: {type(e).__name__}: {e}", path=file, record=where) from e
    if getattr(img, "mode", "RGB") != "RGB":
        img = img.convert("RGB")
    return img


class PretrainDataset(Dataset):
    """Image-caption pairs for pre-training, one item per study (group of views) or per record.

    ``__getitem__`` returns a dict:

    - ``image1``, ``image2``: ``transform`` applied to the two selected views (the same image twice, with
      independent augmentations, when the study has one image);
    - ``teacher_image1``, ``teacher_image2``: ``teacher_transform`` of the same two images, when given;
    - ``caption``: the cleaned caption of view 1 (a study's images share the report); raw text, the
      tokenisation is the collate function's job;
    - ``id``, ``id2``: record ids of the two views (a teacher cache is looked up by them);
    - ``study_id``: the group key (the record's ``study_id``, or its id when it has none);
    - ``corpus``: the ``corpus`` name given here (teacher-cache rows and study ids are keyed by it);
    - ``index``: the item index;
    - ``negative_caption``: one of view 1's ``extra["negative_captions"]`` (counterfactual captions of the
      same image, e.g. its lesion side exchanged; docs/data-format.md), cleaned; only when the record has
      one. The choice uses a generator of its own, so that records with negatives leave the view draws
      unchanged.

    Captions are cleaned at construction; an empty one raises :class:`DataError` or, with
    ``skip_bad=True``, is skipped and counted in ``self.skipped``. With ``validate=True`` every image
    is opened once at construction, with the same raise-or-skip rule. Without it, an unreadable image
    raises a ``DataError`` naming the file and the record id when the item is loaded.
    ``multi_view=False`` makes every record its own item even when records share a ``study_id``.
    Views are drawn with ``rng`` (default: the ``random`` module, which DataLoader seeds per worker; a
    ``random.Random`` given here is copied into every worker with the same state).
    To combine corpora with different roots, wrap one dataset per corpus in ``ConcatDataset``.
    """

    def __init__(
        self,
        root: str | Path,
        records: Sequence[CaptionRecord] | Sequence[Sequence[CaptionRecord]],
        transform: Callable[[Any], torch.Tensor],
        teacher_transform: Callable[[Any], torch.Tensor] | None = None,
        *,
        multi_view: bool = True,
        max_words: int = DEFAULT_MAX_WORDS,
        validate: bool = False,
        skip_bad: bool = False,
        rng: Any = None,
        image_loader: Callable[[Path], Any] | None = None,
        corpus: str = "",
    ) -> None:
        self.root = Path(root)
        self.corpus = corpus
        self.transform = transform
        self.teacher_transform = teacher_transform
        self.rng = rng
        self.max_words = max_words
        self._load_fn = image_loader or _default_loader
        self.skipped = SkipReport()
        items = list(records)
        if items and isinstance(items[0], CaptionRecord):
            groups = group_views(items) if multi_view else [[r] for r in items]
        else:
            groups = [list(g) for g in items]
            if not multi_view:
                groups = [[r] for g in groups for r in g]
        self._captions: dict[int, str] = {}
        self._negative_rng = random.Random(0)  # which counterfactual caption an item gets
        kept: list[list[CaptionRecord]] = []
        for g in groups:
            keep = [r for r in g if self._check(r, validate, skip_bad)]
            if keep:
                kept.append(keep)
        self.groups = kept
        if self.skipped:
            log.warning("%s: %s", self.root, self.skipped.summary())

    def _check(self, r: CaptionRecord, validate: bool, skip_bad: bool) -> bool:
        where = f"id {r.id!r}"
        try:
            self._captions[id(r)] = clean_caption(r.caption, self.max_words)
        except ValueError as e:
            if not skip_bad:
                raise DataError(str(e), path=self.root, record=where) from e
            self.skipped.add(self.root, where, EMPTY_CAPTION, str(e))
            return False
        if validate:
            try:
                self.load_image(r)
            except DataError as e:
                if not skip_bad:
                    raise
                self.skipped.add(self.root / r.image, where, UNREADABLE_IMAGE, str(e))
                return False
        return True

    @property
    def records(self) -> list[CaptionRecord]:
        """All kept records, flat (e.g. to build a teacher cache)."""
        return [r for g in self.groups for r in g]

    def caption(self, r: CaptionRecord) -> str:
        """The cleaned caption of a record of this dataset."""
        c = self._captions.get(id(r))
        return c if c is not None else clean_caption(r.caption, self.max_words)

    def load_image(self, r: CaptionRecord) -> Any:
        """Load one record's image as an RGB PIL image; failures raise DataError naming file and record."""
        return load_record_image(self.root, r, self._load_fn)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        r1, r2 = select_two_views(self.groups[index], self.rng)
        img1 = self.load_image(r1)
        img2 = img1 if r2 is r1 else self.load_image(r2)
        out: dict[str, Any] = {"image1": self.transform(img1), "image2": self.transform(img2)}
        if self.teacher_transform is not None:
            out["teacher_image1"] = self.teacher_transform(img1)
            out["teacher_image2"] = self.teacher_transform(img2)
        out.update(caption=self.caption(r1), id=r1.id, id2=r2.id, study_id=r1.study_id or r1.id, index=index,
                   corpus=self.corpus)
        negative = self.negative_caption(r1)
        if negative is not None:
            out["negative_caption"] = negative
        return out

    def negative_caption(self, r: CaptionRecord) -> str | None:
        """One counterfactual caption of a record (``extra["negative_captions"]``), cleaned, or None (none
        given, or empty after cleaning)."""
        negatives = (r.extra or {}).get("negative_captions")
        if not negatives:
            return None
        pick = negatives[self._negative_rng.randrange(len(negatives))] if len(negatives) > 1 else negatives[0]
        try:
            return clean_caption(str(pick), self.max_words)
        except ValueError:
            return None
