"""Shared machinery of the dataset converters: bad-row handling, image copying, output and dataset card.

Every converter reads an official layout, builds :class:`~amif.data.records.VQARecord` objects, and hands
them to :func:`write_prepared`, which copies (or hard-links) the images, writes ``{train,val,test}.jsonl``,
``README.md`` (the dataset card) and ``prepare.json`` (the machine-readable summary).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from amif.data.records import SPLITS, VQARecord, check_text, write_records
from amif.errors import DataError
from amif.safe_io import TEMP_MARK, remove_stale_temps

MARKER = "prepare.json"  # written into every prepared folder; also proves the folder is ours to overwrite
IMAGE_DIR = "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm", ".JPG", ".JPEG", ".PNG")


# --------------------------------------------------------------------------------------------- bad rows


class BadRows:
    """Raise on a bad row, or (``skip_bad=True``) remember it so the summary and the card can list it."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.items: list[dict[str, str]] = []

    def add(self, error: Exception, path: Path | None = None, record: str | None = None) -> None:
        """Re-raise ``error`` unless skipping; when skipping, record where and why.

        A ``RecursionError`` (a row nested too deeply) or ``UnicodeError`` becomes a :class:`DataError`
        naming ``path`` and ``record``.
        """
        if not isinstance(error, DataError):
            reason = ("nested too deeply" if isinstance(error, RecursionError)
                      else f"text that cannot be encoded ({type(error).__name__})")
            error = DataError(reason, path=path, record=record)
        elif error.path is None and path is not None:  # raised by the record itself: add the file and row
            error = DataError(str(error), path=path, record=record)
        if not self.skip_bad:
            raise error
        self.items.append({
            "file": error.path or "",
            "record": "" if error.record is None else str(error.record),
            "reason": str(error),
        })


# ------------------------------------------------------------------------------------------- row fields


def require_str(row: dict, key: str, path: Path, where: str, *, allow_numbers: bool = False) -> str:
    """Return ``row[key]`` stripped; a missing, empty or non-string value is a :class:`DataError`.

    With ``allow_numbers`` an int or float (e.g. a count answer ``2``) is accepted and cast to ``str``.
    """
    if key not in row:
        raise DataError(f"missing field {key!r}", path=path, record=where)
    value = row[key]
    if allow_numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(f"field {key!r} is {value!r}, not a valid value", path=path, record=where)
        value = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path=path, record=where)
    check_text(value, key, path, where)
    value = value.strip()
    if not value:
        raise DataError(f"field {key!r} is empty", path=path, record=where)
    return value


def require_dict(row: Any, path: Path, where: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"expected an object (dict), got {type(row).__name__}", path=path, record=where)
    return row


def normalize_answer_type(value: Any, path: Path, where: str) -> str | None:
    """``"CLOSED "``, ``"closed"`` -> ``"CLOSED"``; None/empty -> None; anything else is a :class:`DataError`."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"answer_type must be a string, got {type(value).__name__}", path=path, record=where)
    v = value.strip().upper()
    if not v:
        return None
    if v not in ("OPEN", "CLOSED"):
        raise DataError(f"answer_type {value!r} is neither OPEN nor CLOSED", path=path, record=where)
    return v


_YES_NO = frozenset({"yes", "no"})


def yes_no_answer_type(answer: str) -> str:
    """CLOSED when the answer is yes/no (ignoring case, spaces and a final full stop), else OPEN."""
    a = answer.strip().lower().rstrip(".!").strip()
    return "CLOSED" if a in _YES_NO else "OPEN"


MAX_DEPTH = 64  # deeper nesting in an extra field is refused (it would only exhaust the stack)


def json_safe(value: Any, _depth: int = 0) -> Any:
    """Make an extra field JSON-serialisable (numpy scalars -> Python, sets/tuples -> lists, else str).

    Non-finite numbers become ``None`` (JSON has no NaN); text that is not valid Unicode (a lone
    surrogate) raises ``UnicodeError`` and nesting deeper than :data:`MAX_DEPTH` raises ``RecursionError``
    (:meth:`BadRows.add` turns both into a :class:`DataError` naming the row).
    """
    if _depth > MAX_DEPTH:
        raise RecursionError("nested too deeply")
    if isinstance(value, str):
        value.encode("utf-8")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return json_safe(value.item(), _depth + 1)
        except (TypeError, ValueError):
            pass
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, _depth + 1) for v in value]
    if isinstance(value, dict):
        return {json_safe(str(k), _depth + 1): json_safe(v, _depth + 1) for k, v in value.items()}
    return json_safe(str(value), _depth + 1)


def load_json_list(path: Path) -> list[Any]:
    """A JSON file holding a list (of question records); unreadable, malformed or too deep is a DataError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read: {e}", path=path) from e
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}", path=path) from e
    except RecursionError as e:
        raise DataError("JSON nested too deeply", path=path) from e
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of question records, got {type(data).__name__}", path=path)
    return data


# ---------------------------------------------------------------------------------------------- images


def safe_relative(rel: str, path: Path, where: str) -> PurePosixPath:
    """Refuse absolute image names and names that climb out of the image folder (``../../x``)."""
    cleaned = rel.strip().replace("\\", "/")
    p = PurePosixPath(cleaned)
    if not cleaned or p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise DataError(f"image path {rel!r} escapes the dataset folder", path=path, record=where)
    return p


def find_image(folder: Path, rel: str, path: Path, where: str, *, suffixes: Sequence[str] = ()) -> Path:
    """The existing file ``folder/rel`` (trying ``suffixes`` when ``rel`` has no extension)."""
    p = safe_relative(rel, path, where)
    candidates = [folder / p]
    if not p.suffix or p.suffix.lower() not in {s.lower() for s in IMAGE_SUFFIXES}:
        candidates += [folder / (str(p) + s) for s in suffixes]
    for c in candidates:
        try:
            found = c.is_file()
        except (OSError, ValueError):  # e.g. a name over the file system's limit: no such image
            found = False
        if found:
            return _inside(c, folder, rel, path, where)
    shown = str(candidates[0]) if len(str(candidates[0])) <= 200 else str(candidates[0])[:200] + "..."
    raise DataError(f"image {rel[:200]!r} not found (looked for {shown})", path=path, record=where)


def _inside(found: Path, folder: Path, rel: str, path: Path, where: str) -> Path:
    """The real file behind ``found``: symlinks are followed, but only to files inside ``folder``."""
    real = found.resolve()
    if not real.is_relative_to(folder.resolve()):
        raise DataError(f"image {rel!r} is a link to {real}, outside the dataset's image folder", path=path,
                        record=where)
    return real


class ImageStore:
    """Plans where each source image goes under ``OUT/images``; the copying happens in :func:`write_prepared`."""

    def __init__(self) -> None:
        self.plan: dict[str, Path] = {}  # destination (relative to OUT) -> source file

    def add(self, source: Path, dest: str, path: Path, where: str) -> str:
        """Register ``source`` as ``OUT/images/dest``; returns the record's image path (``images/dest``)."""
        rel = f"{IMAGE_DIR}/{safe_relative(dest, path, where).as_posix()}"
        known = self.plan.get(rel)
        if known is not None and known != source:
            raise DataError(f"two different source images map to {rel!r}: {known} and {source}", path=path,
                            record=where)
        self.plan[rel] = source
        return rel


def _place(source: Path, dest: Path, link: bool) -> bool:
    """Hard-link ``source`` to ``dest`` when asked and possible, else copy; True when linked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, dest)
            return True
        except OSError:
            pass
    shutil.copy2(source, dest)
    return False


# ---------------------------------------------------------------------------------------------- layout


def find_root(src: Path, accept: Callable[[Path], bool], *, depth: int = 2) -> Path | None:
    """The first folder among ``src`` and its sub-folders (up to ``depth`` levels) that ``accept`` takes."""
    level = [src]
    for _ in range(depth + 1):
        for d in level:
            if accept(d):
                return d
        nxt: list[Path] = []
        for d in level:
            try:
                nxt += sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
            except OSError:
                continue
        level = nxt
    return None


def check_source(src: str | Path) -> Path:
    src = Path(src)
    if not src.is_dir():
        raise DataError("source folder not found", path=src)
    return src


def prepare_out(out: str | Path, src: Path, overwrite: bool) -> Path:
    """Make sure ``out`` may be written: empty, or a folder written earlier by a converter and ``overwrite``."""
    out = Path(out)
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or out_r in src_r.parents:
        raise DataError("the output folder may not be the source folder or contain it", path=out)
    if out.exists() and not out.is_dir():
        raise DataError("output path exists and is not a folder", path=out)
    remove_stale_temps(out)  # what an interrupted conversion left
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError("output folder is not empty (pass overwrite=True / --overwrite to replace it)",
                            path=out)
        if not (out / MARKER).is_file():
            raise DataError(f"output folder is not empty and has no {MARKER}, so it was not written by "
                            "`amif data prepare`; refusing to overwrite it", path=out)
        for name in [*(f"{s}.jsonl" for s in SPLITS), "README.md", MARKER]:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / IMAGE_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------------------------- splits


def carve_by_image(records: list[VQARecord], fraction: float, seed: int, split: str = "val") -> int:
    """Move a seeded random ``fraction`` of the *images* (with all their questions) to ``split``.

    Returns the number of images moved. Used where a dataset ships no validation split (VQA-RAD), so that
    no image ends up in both the training and the validation records.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    images = sorted({r.image for r in records})
    if fraction == 0.0 or len(images) < 2:
        return 0
    n_val = min(len(images) - 1, max(1, round(fraction * len(images))))
    rng = random.Random(seed)
    rng.shuffle(images)
    chosen = set(images[:n_val])
    for r in records:
        if r.image in chosen:
            r.split = split
    return n_val


def dedupe_qids(records: Iterable[VQARecord], notes: list[str]) -> None:
    """Give repeated qids within one split a ``~2``, ``~3`` suffix (readers refuse duplicates) and say so."""
    seen: dict[tuple[str, str], int] = {}
    renamed = 0
    for r in records:
        key = (r.split, r.qid)
        n = seen.get(key, 0) + 1
        seen[key] = n
        if n > 1:
            r.extra.setdefault("original_qid", r.qid)
            r.qid = f"{r.qid}~{n}"
            renamed += 1
    if renamed:
        notes.append(f"{renamed} record(s) repeated a qid already used in the same split; they were renamed "
                     "QID~2, QID~3, ... (the official id is kept in extra.original_qid).")


# ----------------------------------------------------------------------------------------------- output


@dataclass
class DatasetCard:
    """What a converter knows about its dataset, for the README of the prepared folder."""

    name: str  # registry name, e.g. "vqa-rad"
    title: str
    homepage: str
    licence: str
    citation: str  # BibTeX
    layout: str = ""  # which official layout was read
    notes: list[str] = field(default_factory=list)


def count_records(records: Sequence[VQARecord]) -> dict[str, dict[str, Any]]:
    """Per split: records, distinct images, answer-type counts and question-type counts."""
    out: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        rs = [r for r in records if r.split == split]
        types = Counter(r.answer_type or "unknown" for r in rs)
        qtypes = Counter(r.question_type or "none" for r in rs)
        out[split] = {
            "records": len(rs),
            "images": len({r.image for r in rs}),
            "OPEN": types.get("OPEN", 0),
            "CLOSED": types.get("CLOSED", 0),
            "unknown_answer_type": types.get("unknown", 0),
            "question_types": dict(sorted(qtypes.items())),
        }
    return out


def write_prepared(
    out: Path,
    src: Path,
    card: DatasetCard,
    records: list[VQARecord],
    images: ImageStore,
    options: dict[str, Any],
    bad: BadRows,
    *,
    link: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy/link the images, write the split files, the dataset card and ``prepare.json``; return the summary.

    ``extra`` holds converter-specific summary entries (e.g. how many questions a language filter dropped).
    """
    dedupe_qids(records, card.notes)
    used = {r.image for r in records}
    linked = copied = 0
    final, out = out, out / f"{TEMP_MARK}prepare-{os.getpid()}"  # published by _publish when complete
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    try:
        for rel, source in sorted(images.plan.items()):
            if rel not in used:  # image of a skipped row only
                continue
            if _place(source, out / rel, link):
                linked += 1
            else:
                copied += 1
        for split in SPLITS:
            write_records(out / f"{split}.jsonl", [r for r in records if r.split == split])
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    summary: dict[str, Any] = {
        "dataset": card.name,
        "title": card.title,
        "source": str(src),
        "out": str(out),
        "layout": card.layout,
        "options": options,
        "splits": count_records(records),
        "images": {"total": len(used), "hard_linked": linked, "copied": copied},
        "skipped": list(bad.items),
        "n_skipped": len(bad.items),
        "notes": list(card.notes),
        "homepage": card.homepage,
        "licence": card.licence,
        **(extra or {}),
    }
    summary["out"] = str(final)
    try:
        (out / "README.md").write_text(render_card(card, summary), encoding="utf-8")
        (out / MARKER).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    _publish(out, final)
    return summary


def _publish(tmp: Path, final: Path) -> None:
    """Move the finished conversion from ``tmp`` (inside ``final``) into ``final``; the marker goes last, so
    a folder without it is an unfinished conversion (and ``--overwrite`` may replace it)."""
    for entry in sorted(tmp.iterdir(), key=lambda e: e.name == MARKER):
        os.replace(entry, final / entry.name)
    tmp.rmdir()
    remove_stale_temps(final)


def render_card(card: DatasetCard, summary: dict[str, Any]) -> str:
    """The README.md of a prepared folder: origin, licence, citation, options, counts, notes, skipped rows."""
    lines = [
        f"# {card.title} (prepared by `amif data prepare {card.name}`)",
        "",
        "## Origin",
        "",
        f"- Official source: {card.homepage}",
        f"- Converted from: `{summary['source']}` (layout: {card.layout or 'n/a'})",
        "- Converter: `amif.data.prepare` (record format: `docs/data-format.md`; guide: `docs/datasets.md`)",
        "",
        "## Licence",
        "",
        card.licence,
        "",
        "## How to cite",
        "",
        "Cite the dataset authors when you use this data:",
        "",
        "```bibtex",
        card.citation.strip(),
        "```",
        "",
        "## Conversion options",
        "",
    ]
    lines += [f"- `{k}`: `{v}`" for k, v in summary["options"].items()]
    lines += [
        "",
        "## Counts",
        "",
        "| split | records | images | OPEN | CLOSED | unknown type |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split, c in summary["splits"].items():
        lines.append(f"| {split} | {c['records']} | {c['images']} | {c['OPEN']} | {c['CLOSED']} | "
                     f"{c['unknown_answer_type']} |")
    qtypes = sorted({q for c in summary["splits"].values() for q in c["question_types"]})
    if 0 < len(qtypes) <= 12:
        lines += ["", "Question types per split:", ""]
        for split, c in summary["splits"].items():
            parts = ", ".join(f"{q}: {n}" for q, n in c["question_types"].items())
            lines.append(f"- {split}: {parts or '-'}")
    im = summary["images"]
    lines += ["", f"Images: {im['total']} ({im['hard_linked']} hard-linked, {im['copied']} copied).", ""]
    lines += ["## Notes", ""]
    lines += [f"- {n}" for n in summary["notes"]] or ["- none"]
    lines += ["", "## Skipped rows", ""]
    if summary["skipped"]:
        lines.append(f"{len(summary['skipped'])} malformed row(s) were skipped (`skip_bad=True`):")
        lines.append("")
        lines += [f"- {s['reason']}" for s in summary["skipped"]]
    else:
        lines.append("None: every official row was converted.")
    return "\n".join(lines) + "\n"


def format_summary(summary: dict[str, Any]) -> str:
    """A short plain-text summary of a conversion, for the command line."""
    lines = [f"{summary['title']}: {summary['source']} -> {summary['out']} (layout {summary['layout']})"]
    for split, c in summary["splits"].items():
        lines.append(f"  {split:<5} {c['records']:>6} records  {c['images']:>5} images  OPEN {c['OPEN']:>6}  "
                     f"CLOSED {c['CLOSED']:>6}" + (f"  unknown {c['unknown_answer_type']}"
                                                    if c["unknown_answer_type"] else ""))
    im = summary["images"]
    lines.append(f"  images: {im['total']} ({im['hard_linked']} hard-linked, {im['copied']} copied)")
    for n in summary["notes"]:
        lines.append(f"  note: {n}")
    if summary["skipped"]:
        lines.append(f"  skipped {summary['n_skipped']} malformed row(s):")
        lines += [f"    {s['reason']}" for s in summary["skipped"]]
    return "\n".join(lines)
