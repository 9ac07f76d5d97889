"""Sanity and leak checks of a prepared dataset folder (``amif data check DIR``).

What is checked, per kind of problem:

* errors: split files that cannot be read, records that are invalid (missing field, image path escaping
  the folder, ...), repeated qids in one split, images that are missing or cannot be decoded, questions
  whose answer is empty;
* leaks: the same image (by the SHA-256 of its bytes, so a copy under another name counts) in more than
  one split, and the same image-question pair (normalised question) in more than one split;
* warnings: the same image-question pair twice in one split, and answers that are different strings but
  normalise to the same answer (``"Yes"`` / ``"yes"``), which inflate the answer vocabulary.

``report.ok`` is True when there are no errors and no leaks. Some official splits share images on
purpose (VQA-RAD asks its test questions about training images); ``allow_shared_images=True`` then turns
shared images into warnings, while shared image-question pairs stay leaks.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amif.answers import normalize_answer, normalize_question
from amif.data.images import load_image
from amif.data.records import (
    SPLITS,
    VQARecord,
    _iter_json_objects,
    image_exists,
    parse_vqa_record,
    split_file,
)
from amif.errors import DataError

__all__ = ["CheckReport", "Problem", "check_dataset"]


@dataclass(frozen=True)
class Problem:
    """One finding: its kind, a readable message, and the splits / images / qids involved."""

    kind: str
    message: str
    splits: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    qids: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.message


@dataclass
class CheckReport:
    """The result of :func:`check_dataset`: one list of :class:`Problem` per kind."""

    root: str
    counts: dict[str, int] = field(default_factory=dict)  # records per split found
    images_checked: int = 0
    allow_shared_images: bool = False
    invalid: list[Problem] = field(default_factory=list)  # unreadable split files, invalid records, qids
    missing_images: list[Problem] = field(default_factory=list)
    unreadable_images: list[Problem] = field(default_factory=list)
    empty_answers: list[Problem] = field(default_factory=list)
    shared_images: list[Problem] = field(default_factory=list)  # same image content in several splits
    shared_pairs: list[Problem] = field(default_factory=list)  # same image + question in several splits
    duplicate_questions: list[Problem] = field(default_factory=list)  # same image + question in one split
    answer_variants: list[Problem] = field(default_factory=list)  # distinct strings, same normalised answer

    @property
    def errors(self) -> list[Problem]:
        return [*self.invalid, *self.missing_images, *self.unreadable_images, *self.empty_answers]

    @property
    def leaks(self) -> list[Problem]:
        """Images or image-question pairs shared between splits (shared images excepted when allowed)."""
        return [*([] if self.allow_shared_images else self.shared_images), *self.shared_pairs]

    @property
    def warnings(self) -> list[Problem]:
        return [*(self.shared_images if self.allow_shared_images else []), *self.duplicate_questions,
                *self.answer_variants]

    @property
    def ok(self) -> bool:
        """No errors and no leaks (warnings do not count)."""
        return not self.errors and not self.leaks

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, n_errors=len(self.errors), n_leaks=len(self.leaks), n_warnings=len(self.warnings))
        return d

    def to_text(self, max_items: int = 20) -> str:
        """A readable report, listing at most ``max_items`` problems of each kind."""
        counts = ", ".join(f"{s} {n}" for s, n in self.counts.items()) or "no split files"
        lines = [f"Dataset {self.root}: {counts} records; {self.images_checked} images checked."]
        sections = [
            ("invalid files or records", self.invalid),
            ("missing images", self.missing_images),
            ("unreadable images", self.unreadable_images),
            ("empty answers", self.empty_answers),
            ("LEAK: images in more than one split" if not self.allow_shared_images
             else "images in more than one split (allowed)", self.shared_images),
            ("LEAK: image-question pairs in more than one split", self.shared_pairs),
            ("duplicate questions within a split", self.duplicate_questions),
            ("answers that differ only by normalisation", self.answer_variants),
        ]
        for title, items in sections:
            if not items:
                continue
            lines.append(f"{title}: {len(items)}")
            lines += [f"  - {p.message}" for p in items[:max_items]]
            if len(items) > max_items:
                lines.append(f"  ... and {len(items) - max_items} more")
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"{verdict}: {len(self.errors)} error(s), {len(self.leaks)} leak(s), "
                     f"{len(self.warnings)} warning(s).")
        return "\n".join(lines)


def _norm_question(q: str) -> str:
    try:
        return normalize_question(q)
    except ValueError:
        return q.strip().lower()


def _read_split(root: Path, split: str, report: CheckReport) -> list[VQARecord] | None:
    """The valid records of one split; invalid ones and empty answers are noted in ``report``."""
    try:
        path = split_file(root, split)
    except DataError:
        return None
    records: list[VQARecord] = []
    seen: dict[str, str] = {}
    try:
        for n, obj in _iter_json_objects(path):
            where = f"#{n}"
            if isinstance(obj, dict) and "answer" in obj and (obj["answer"] is None or
                                                              (isinstance(obj["answer"], str)
                                                               and not obj["answer"].strip())):
                qid = str(obj.get("qid", where))
                report.empty_answers.append(Problem(
                    "empty_answer", f"{path.name} {where} (qid {qid!r}): empty answer to "
                    f"{obj.get('question')!r}", (split,), (str(obj.get("image", "")),), (qid,)))
                obj = {**obj, "answer": "<empty>"}
            try:
                rec = parse_vqa_record(obj, path, where)
            except DataError as e:
                report.invalid.append(Problem("invalid_record", str(e), (split,)))
                continue
            if rec.qid in seen:
                report.invalid.append(Problem("duplicate_qid", f"{path.name} {where}: qid {rec.qid!r} repeats "
                                              f"{seen[rec.qid]}", (split,), (rec.image,), (rec.qid,)))
            seen.setdefault(rec.qid, where)
            if rec.split != split:
                report.invalid.append(Problem("wrong_split", f"{path.name} {where} (qid {rec.qid!r}): split "
                                              f"field is {rec.split!r}", (split,), (rec.image,), (rec.qid,)))
            records.append(rec)
    except DataError as e:
        report.invalid.append(Problem("unreadable_file", str(e), (split,)))
    return records


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _list(values: Iterable[str], limit: int = 3) -> str:
    v = sorted(values)
    return ", ".join(repr(x) for x in v[:limit]) + (f" (+{len(v) - limit} more)" if len(v) > limit else "")


def check_dataset(root: str | Path, *, allow_shared_images: bool = False, decode_images: bool = True
                  ) -> CheckReport:
    """Check a prepared dataset folder for errors, cross-split leaks and suspicious duplicates.

    ``decode_images``: decode every image with :func:`amif.data.images.load_image` (default) rather than
    only checking that it exists. ``allow_shared_images``: an image shared between splits is a warning,
    not a leak (for datasets whose official split shares images, such as VQA-RAD).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("dataset folder not found", path=root)
    report = CheckReport(root=str(root), allow_shared_images=allow_shared_images)
    by_split: dict[str, list[VQARecord]] = {}
    for split in SPLITS:
        recs = _read_split(root, split, report)
        if recs is not None:
            by_split[split] = recs
            report.counts[split] = len(recs)
    if not by_split:
        raise DataError(f"no split files ({', '.join(f'{s}.jsonl' for s in SPLITS)}) in the dataset folder",
                        path=root)

    # images: existence, decoding, content hash
    content: dict[str, str] = {}  # relative image path -> sha256 (only for files that exist)
    users_of: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for split, recs in by_split.items():
        for r in recs:
            users_of[r.image].append((split, r.qid))
    for rel in sorted(users_of):
        p = root / rel
        users = users_of[rel][:3]
        used_in = tuple(sorted({s for s, _ in users_of[rel]}))
        who = ", ".join(f"{s} qid {q!r}" for s, q in users)
        if not image_exists(root, rel):
            report.missing_images.append(Problem("missing_image", f"{rel}: not found (used by {who})",
                                                 used_in, (rel,)))
            continue
        if decode_images:
            try:
                load_image(p)
            except DataError as e:
                report.unreadable_images.append(Problem("unreadable_image", f"{rel}: {e}",
                                                        used_in, (rel,)))
                continue
        content[rel] = _hash_file(p)
        report.images_checked += 1

    def key_of(rel: str) -> str:
        return content.get(rel, f"path:{rel}")

    # the same image content in several splits
    splits_of_image: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for split, recs in by_split.items():
        for r in recs:
            splits_of_image[key_of(r.image)][split].add(r.image)
    for where in splits_of_image.values():
        if len(where) > 1:
            names = {n for ns in where.values() for n in ns}
            desc = "; ".join(f"{s}: {_list(ns)}" for s, ns in sorted(where.items()))
            report.shared_images.append(Problem("shared_image", f"same image in {len(where)} splits ({desc})",
                                                tuple(sorted(where)), tuple(sorted(names))))

    # image-question pairs: duplicates within a split, and across splits
    pairs: dict[tuple[str, str], dict[str, list[VQARecord]]] = defaultdict(lambda: defaultdict(list))
    for split, recs in by_split.items():
        for r in recs:
            pairs[(key_of(r.image), _norm_question(r.question))][split].append(r)
    for (_, question), where in pairs.items():
        qids = tuple(r.qid for rs in where.values() for r in rs)
        images = tuple(sorted({r.image for rs in where.values() for r in rs}))
        if len(where) > 1:
            desc = "; ".join(f"{s}: qid {_list(r.qid for r in rs)}" for s, rs in sorted(where.items()))
            report.shared_pairs.append(Problem("shared_pair", f"question {question!r} on image {_list(images)} in "
                                               f"{len(where)} splits ({desc})", tuple(sorted(where)), images,
                                               qids))
        for split, rs in sorted(where.items()):
            if len(rs) > 1:
                answers = {r.answer for r in rs}
                report.duplicate_questions.append(Problem(
                    "duplicate_question", f"{split}: question {question!r} on image {_list(images)} asked "
                    f"{len(rs)} times (qids {_list(r.qid for r in rs)}; answers {_list(answers)})", (split,),
                    images, tuple(r.qid for r in rs)))

    # answers that are different strings but the same after normalisation
    variants: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    empty = {(p.splits[0], p.qids[0]) for p in report.empty_answers}
    for split, recs in by_split.items():
        for r in recs:
            if (split, r.qid) in empty:
                continue
            variants[normalize_answer(r.answer)][r.answer].add(split)
    for norm, raw in sorted(variants.items()):
        if len(raw) > 1:
            report.answer_variants.append(Problem(
                "answer_variant", f"answers {_list(raw, limit=6)} all normalise to {norm!r}",
                tuple(sorted({s for ss in raw.values() for s in ss}))))
    return report
