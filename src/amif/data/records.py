"""The project's record formats for VQA data and for image-caption (pre-training) data.

A prepared dataset is a folder ``ROOT`` holding one JSON Lines file per split and the images:

    ROOT/train.jsonl  ROOT/val.jsonl  ROOT/test.jsonl     VQA records, one JSON object per line
    ROOT/captions_train.jsonl  ROOT/captions_val.jsonl     image-caption records (optional)
    ROOT/images/...                                        image files (PNG, JPEG or DICOM)
    ROOT/README.md                                         dataset card

Image paths in records are relative to ROOT and may not escape it. A JSON file holding a list of
records is read as well as JSON Lines. See ``docs/data-format.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amif.errors import DataError

SPLITS = ("train", "val", "test")
ANSWER_TYPES = ("OPEN", "CLOSED")


@dataclass
class VQARecord:
    """One question about one image."""

    qid: str
    image: str
    question: str
    answer: str
    split: str
    answer_type: str | None = None  # "OPEN" / "CLOSED" as the dataset labels it, or None if unknown
    question_type: str | None = None  # e.g. "modality", "count"; None if the dataset has none
    study_id: str | None = None  # images of one study/patient/volume share it (leak checks, splits)
    extra: dict[str, Any] = field(default_factory=dict)  # other official fields kept verbatim

    def __post_init__(self) -> None:
        _check_fields(self, f"qid {self.qid!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return d


@dataclass
class CaptionRecord:
    """One image with its caption, for pre-training. Records sharing ``study_id`` are views of one study."""

    id: str
    image: str
    caption: str
    split: str
    study_id: str | None = None
    view: str | None = None  # view type, e.g. "PA", "LATERAL", "axial"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self, f"id {self.id!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return d


def _check_fields(record: Any, where: str) -> None:
    """Every field of a record must be writable as JSON Lines (see :func:`check_plain`); the DataError
    names the record (a reader adds the file)."""
    for key, value in vars(record).items():
        check_plain(value, key, None, where)


_VQA_REQUIRED = ("qid", "image", "question", "answer", "split")
_CAPTION_REQUIRED = ("id", "image", "caption", "split")


MAX_DEPTH = 64  # deeper nesting in a record is refused (it would only exhaust the stack)


def _decode(raw: bytes, path: Path, record: str | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})", path=path,
                        record=record) from e


def _loads(text: str, path: Path, record: str | None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = f"line {e.lineno}, column {e.colno}" if record is None else f"column {e.colno}"
        raise DataError(f"malformed JSON at {at}: {e.msg}", path=path, record=record) from e
    except RecursionError as e:
        raise DataError("JSON nested too deeply", path=path, record=record) from e


def _iter_json_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based record number, object) from a JSON list file or a JSON Lines file."""
    if not path.is_file():
        raise DataError("file not found", path=path)
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        raw = raw[3:]
    if raw.lstrip().startswith(b"["):
        yield from enumerate(_loads(_decode(raw, path, None), path, None), start=1)
        return
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        yield lineno, _loads(_decode(line, path, where), path, where)


def check_text(value: str, key: str, path: object, where: object) -> str:
    """``value`` unless it cannot be written as UTF-8 (a lone surrogate such as ``\\ud800``): a DataError."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"field {key!r} holds text that is not valid Unicode ({e.reason} at position {e.start})",
                        path=path, record=where) from e
    return value


def check_plain(value: Any, key: str, path: object, where: object, depth: int = 0) -> None:
    """An extra field must be JSON that can be written back: UTF-8 text, finite numbers, bounded nesting."""
    if depth > MAX_DEPTH:
        raise DataError(f"field {key!r} is nested more than {MAX_DEPTH} levels deep", path=path, record=where)
    if isinstance(value, str):
        check_text(value, key, path, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"field {key!r} holds {value!r}, which JSON cannot represent", path=path, record=where)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(str(k), key, path, where)
            check_plain(v, key, path, where, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_plain(v, key, path, where, depth + 1)


def _check_str(obj: dict, key: str, path: Path, where: str, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path=path, record=where)
    check_text(value, key, path, where)
    if not allow_empty and not value.strip():
        raise DataError(f"field {key!r} is empty", path=path, record=where)
    return value


def check_relative_path(rel: str, *, path: Path | None = None, record: object = None) -> str:
    """Refuse absolute image paths and paths that escape the dataset folder (``../x``)."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise DataError(f"image path {rel!r} escapes the dataset folder", path=path, record=record)
    return rel


def parse_vqa_record(obj: Any, path: Path, where: str) -> VQARecord:
    """Validate one JSON object as a :class:`VQARecord`; errors name ``path`` and ``where``."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, record=where)
    missing = [k for k in _VQA_REQUIRED if k not in obj]
    for k, v in obj.items():
        check_plain(v, str(k), path, where)
    if "qid" in obj:
        where = f"{where} (qid {obj['qid']!r})"
    if missing:
        raise DataError(f"missing field(s) {', '.join(missing)}", path=path, record=where)
    qid = str(obj["qid"])
    image = check_relative_path(_check_str(obj, "image", path, where), path=path, record=where)
    question = _check_str(obj, "question", path, where)
    answer = obj["answer"]
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        if not math.isfinite(answer):
            raise DataError(f"field 'answer' is {answer!r}, not a valid answer", path=path, record=where)
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise DataError("field 'answer' is empty or not a string", path=path, record=where)
    split = _check_str(obj, "split", path, where)
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {SPLITS}", path=path, record=where)
    answer_type = obj.get("answer_type")
    if answer_type is not None:
        answer_type = str(answer_type).upper()
        if answer_type not in ANSWER_TYPES:
            raise DataError(f"answer_type {obj['answer_type']!r} is not OPEN or CLOSED", path=path, record=where)
    known = set(_VQA_REQUIRED) | {"answer_type", "question_type", "study_id", "extra"}
    extra = dict(obj.get("extra") or {})
    extra.update({k: v for k, v in obj.items() if k not in known})
    qt = obj.get("question_type")
    sid = obj.get("study_id")
    return VQARecord(
        qid=qid, image=image, question=question, answer=answer, split=split, answer_type=answer_type,
        question_type=None if qt is None else str(qt), study_id=None if sid is None else str(sid), extra=extra,
    )


def parse_caption_record(obj: Any, path: Path, where: str) -> CaptionRecord:
    """Validate one JSON object as a :class:`CaptionRecord`; errors name ``path`` and ``where``."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, record=where)
    for k, v in obj.items():
        check_plain(v, str(k), path, where)
    if "id" in obj:
        where = f"{where} (id {obj['id']!r})"
    missing = [k for k in _CAPTION_REQUIRED if k not in obj]
    if missing:
        raise DataError(f"missing field(s) {', '.join(missing)}", path=path, record=where)
    image = check_relative_path(_check_str(obj, "image", path, where), path=path, record=where)
    caption = _check_str(obj, "caption", path, where)
    split = _check_str(obj, "split", path, where)
    known = set(_CAPTION_REQUIRED) | {"study_id", "view", "extra"}
    extra = dict(obj.get("extra") or {})
    extra.update({k: v for k, v in obj.items() if k not in known})
    sid, view = obj.get("study_id"), obj.get("view")
    return CaptionRecord(
        id=str(obj["id"]), image=image, caption=caption, split=split,
        study_id=None if sid is None else str(sid), view=None if view is None else str(view), extra=extra,
    )


def read_vqa_records(path: str | Path) -> list[VQARecord]:
    """Read VQA records from a JSON (list) or JSON Lines file, validating every record."""
    path = Path(path)
    records = [parse_vqa_record(obj, path, f"#{i}") for i, obj in _iter_json_objects(path)]
    seen: dict[str, int] = {}
    for i, r in enumerate(records, start=1):
        if r.qid in seen:
            raise DataError(f"duplicate qid {r.qid!r} (first at record #{seen[r.qid]})", path=path, record=f"#{i}")
        seen[r.qid] = i
    return records


def read_caption_records(path: str | Path) -> list[CaptionRecord]:
    """Read image-caption records from a JSON (list) or JSON Lines file, validating every record."""
    path = Path(path)
    return [parse_caption_record(obj, path, f"#{i}") for i, obj in _iter_json_objects(path)]


def write_records(path: str | Path, records: Iterable[VQARecord | CaptionRecord]) -> int:
    """Write records as JSON Lines; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def split_file(root: str | Path, split: str) -> Path:
    """The JSON Lines file of ``split`` in a prepared dataset folder (``.json`` accepted as well)."""
    root = Path(root)
    for name in (f"{split}.jsonl", f"{split}.json"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"no {split}.jsonl (or {split}.json) in the dataset folder", path=root)


def load_split(root: str | Path, split: str) -> list[VQARecord]:
    """Read one split of a prepared VQA dataset folder."""
    return read_vqa_records(split_file(root, split))


def load_caption_split(root: str | Path, split: str) -> list[CaptionRecord]:
    """Read one split of the image-caption records of a prepared folder (``captions_{split}.jsonl``)."""
    root = Path(root)
    for name in (f"captions_{split}.jsonl", f"captions_{split}.json"):
        if (root / name).is_file():
            return read_caption_records(root / name)
    raise DataError(f"no captions_{split}.jsonl in the dataset folder", path=root)


def image_exists(root: str | Path, rel: str) -> bool:
    """Whether ``root/rel`` is a file (a name the file system cannot hold, e.g. over 255 bytes, is not)."""
    try:
        return resolve_image(root, rel).is_file()
    except (OSError, ValueError):
        return False


def resolve_image(root: str | Path, rel: str) -> Path:
    """Absolute path of an image given relative to a dataset root (refusing paths that escape it)."""
    check_relative_path(rel, path=root)
    return Path(root) / rel
