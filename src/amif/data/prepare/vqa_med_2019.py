"""VQA-Med-2019 (ImageCLEF 2019): pipe-separated question files per category and per split.

Two layouts are read:

* the official ImageCLEF release: ``.../QAPairsByCategory/C1_Modality_train.txt`` (and ``C2_Plane``,
  ``C3_Organ``, ``C4_Abnormality``) with ``Train_images/``; the same with ``_val.txt`` and ``Val_images/``;
  ``VQAMed2019_Test_Questions_w_Ref_Answers.txt`` (``image|category|question|answer``) with
  ``VQAMed2019_Test_Images/``. Rows are ``image_id|question|answer``.
* the M3AE-style re-packaging: ``{train,val,test}/QA/{Modality,Organ,Plane,Abnormality}.csv`` (same
  pipe-separated rows) with ``{split}/images/*.jpg``.

``question_type`` is the category; ``answer_type`` is CLOSED for yes/no answers and OPEN otherwise.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from amif.data.prepare.common import (
    BadRows,
    DatasetCard,
    ImageStore,
    check_source,
    find_image,
    find_root,
    prepare_out,
    safe_relative,
    write_prepared,
    yes_no_answer_type,
)
from amif.data.records import SPLITS, VQARecord
from amif.errors import ConfigError, DataError

CATEGORIES = ("modality", "organ", "plane", "abnormality")
TEST_FILE = "VQAMed2019_Test_Questions_w_Ref_Answers.txt"
_CATEGORY_FILE = re.compile(r"^C\d+_([A-Za-z]+)_(train|val|validation)\.txt$", re.IGNORECASE)
_IMAGE_DIRS = {
    "train": ("Train_images", "Training_images", "train_images"),
    "val": ("Val_images", "Validation_images", "val_images"),
    "test": ("VQAMed2019_Test_Images", "Test_images", "test_images"),
}

CARD = DatasetCard(
    name="vqa-med-2019",
    title="VQA-Med-2019 (ImageCLEF 2019)",
    homepage="https://github.com/abachaa/VQA-Med-2019 and https://www.imageclef.org/2019/medical/vqa",
    licence="ImageCLEF challenge data, distributed under the ImageCLEF / VQA-Med 2019 terms of use; no "
            "open licence was found. Read the terms on the pages above before using or sharing the data.",
    citation="""@inproceedings{benabacha2019vqamed,
  title     = {{VQA-Med}: Overview of the Medical Visual Question Answering Task at {ImageCLEF} 2019},
  author    = {Ben Abacha, Asma and Hasan, Sadid A. and Datla, Vivek V. and Liu, Joey and
               Demner-Fushman, Dina and M{\\"u}ller, Henning},
  booktitle = {CLEF 2019 Working Notes},
  series    = {CEUR Workshop Proceedings},
  volume    = {2380},
  year      = {2019}
}""",
)


def parse_categories(categories: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"modality,organ,plane"`` or a list -> canonical category names (all four when None or "all")."""
    if categories is None:
        return CATEGORIES
    items = categories.split(",") if isinstance(categories, str) else list(categories)
    names = [str(c).strip().lower() for c in items if str(c).strip()]
    if names == ["all"] or not names:
        return CATEGORIES
    unknown = [c for c in names if c not in CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown VQA-Med-2019 categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; choose "
                        f"from {list(CATEGORIES)}")
    return tuple(c for c in CATEGORIES if c in names)


def _walk(src: Path, depth: int = 3) -> Iterator[Path]:
    level = [src]
    for _ in range(depth + 1):
        yield from level
        nxt: list[Path] = []
        for d in level:
            if d.name.lower().endswith("images"):
                continue  # never list the (large) image folders
            try:
                nxt += sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
            except OSError:
                continue
        level = nxt


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    lower = {n.lower() for n in names}
    try:
        for c in sorted(folder.iterdir()):
            if c.is_dir() and c.name.lower() in lower:
                return c
    except OSError:
        return None
    return None


def _locate_official(src: Path) -> tuple[list[tuple[str, str | None, Path]], dict[str, Path]]:
    """Question files as (split, category or None, path) and the image folder of each split."""
    files: list[tuple[str, str | None, Path]] = []
    image_dirs: dict[str, Path] = {}
    for d in _walk(src):
        if d.name.lower() == "qapairsbycategory":
            for f in sorted(d.iterdir()):
                m = _CATEGORY_FILE.match(f.name)
                if m and f.is_file():
                    split = "train" if m.group(2).lower() == "train" else "val"
                    files.append((split, m.group(1).lower(), f))
                    found = _child(d.parent, _IMAGE_DIRS[split])
                    if found is not None:
                        image_dirs.setdefault(split, found)
        test = d / TEST_FILE
        if test.is_file() and not any(s == "test" for s, _, _ in files):
            files.append(("test", None, test))
            found = _child(d, _IMAGE_DIRS["test"])
            if found is not None:
                image_dirs.setdefault("test", found)
    for split in SPLITS:  # image folder not beside its questions: look anywhere
        if split not in image_dirs:
            for d in _walk(src):
                found = _child(d, _IMAGE_DIRS[split])
                if found is not None:
                    image_dirs[split] = found
                    break
    return files, image_dirs


def _is_m3ae(d: Path) -> bool:
    return all((d / s / "QA").is_dir() for s in SPLITS)


def _locate_m3ae(root: Path) -> tuple[list[tuple[str, str | None, Path]], dict[str, Path]]:
    files: list[tuple[str, str | None, Path]] = []
    for split in SPLITS:
        for f in sorted((root / split / "QA").iterdir()):
            if f.is_file() and f.suffix.lower() in (".csv", ".txt") and f.stem.lower() in CATEGORIES:
                files.append((split, f.stem.lower(), f))
    image_dirs = {s: root / s / "images" for s in SPLITS if (root / s / "images").is_dir()}
    return files, image_dirs


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read as UTF-8 text: {e}", path=path) from e


def _row(line: str, lineno: int, path: Path, split: str, file_category: str | None, image_dir: Path,
         images: ImageStore, keep: tuple[str, ...]) -> VQARecord | str:
    """The record of one pipe-separated row, or the row's category when that category is not kept."""
    where = f"line {lineno}"
    fields = [f.strip() for f in line.split("|")]
    if len(fields) == 4:
        image_id, category, question, answer = fields
        category = category.lower()
        if category not in CATEGORIES:
            raise DataError(f"unknown category {fields[1]!r} (expected one of {list(CATEGORIES)})", path=path,
                            record=where)
    elif len(fields) == 3 and file_category is not None:
        image_id, question, answer = fields
        category = file_category
    else:
        want = "image_id|question|answer or image_id|category|question|answer" if file_category else \
            "image_id|category|question|answer"
        raise DataError(f"expected {want} separated by '|', found {len(fields)} field(s)", path=path,
                        record=where)
    for name, value in (("image id", image_id), ("question", question), ("answer", answer)):
        if not value:
            raise DataError(f"empty {name}", path=path, record=where)
    if category not in keep:
        return category
    rel = safe_relative(image_id, path, where)
    source = find_image(image_dir, image_id, path, where, suffixes=(".jpg", ".jpeg", ".png"))
    image = images.add(source, f"{split}/{(rel.parent / source.name).as_posix()}", path, where)
    return VQARecord(qid=f"{split}-{category}-{lineno}", image=image, question=question, answer=answer,
                     split=split, answer_type=yes_no_answer_type(answer), question_type=category,
                     study_id=None, extra={"image_id": image_id})


def prepare_vqa_med_2019(
    src: str | Path,
    out: str | Path,
    *,
    categories: str | list[str] | tuple[str, ...] | None = None,
    skip_bad: bool = False,
    link: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert VQA-Med-2019 into ``out``; returns the summary.

    ``categories``: which question categories to keep, e.g. ``"modality,organ,plane"`` (the three-category
    protocol many papers use); all four (with abnormality) by default.
    """
    src = check_source(src)
    keep = parse_categories(categories)
    m3ae_root = find_root(src, _is_m3ae, depth=1)
    if m3ae_root is not None:
        layout = "m3ae ({train,val,test}/QA/*.csv + {split}/images)"
        files, image_dirs = _locate_m3ae(m3ae_root)
    else:
        layout = "official ImageCLEF (QAPairsByCategory/C*_*_{train,val}.txt + " + TEST_FILE + ")"
        files, image_dirs = _locate_official(src)
    for split in SPLITS:
        if not any(s == split for s, _, _ in files):
            raise DataError(f"no VQA-Med-2019 question files for the {split} split found (expected "
                            f"QAPairsByCategory/C*_<Category>_{split}.txt, {TEST_FILE}, or "
                            f"{split}/QA/<Category>.csv)", path=src)
        if split not in image_dirs:
            raise DataError(f"no image folder for the {split} split found (expected one of "
                            f"{', '.join(_IMAGE_DIRS[split])} or {split}/images)", path=src)
    bad = BadRows(skip_bad)
    images = ImageStore()
    records: list[VQARecord] = []
    dropped: Counter[str] = Counter()
    for split, file_category, path in files:
        if file_category is not None and file_category not in CATEGORIES:
            continue  # e.g. an "All_QA_Pairs" style file: the per-category files carry the category
        if file_category is not None and file_category not in keep:
            continue
        for lineno, line in enumerate(_read_lines(path), start=1):
            if not line.strip():
                continue
            try:
                rec = _row(line, lineno, path, split, file_category, image_dirs[split], images, keep)
            except (DataError, RecursionError, UnicodeError) as e:
                bad.add(e, path, f"line {lineno}")
                continue
            if isinstance(rec, str):
                dropped[rec] += 1
            else:
                records.append(rec)
    card = replace(CARD, layout=layout, notes=[])
    card.notes.append(f"Categories kept: {', '.join(keep)} (question_type = category)."
                      + (f" Left out from the test file: {dict(dropped)}." if dropped else ""))
    card.notes.append("VQA-Med-2019 has no answer-type field: answer_type is CLOSED when the answer is yes or no "
                      "and OPEN otherwise.")
    card.notes.append("qid = SPLIT-CATEGORY-LINE (line number in the official file); the image id is kept in "
                      "extra.image_id. The official train/val/test splits are used as they are.")
    options = {"categories": ",".join(keep), "skip_bad": skip_bad, "link": link}
    out = prepare_out(out, src, overwrite)
    return write_prepared(out, src, card, records, images, options, bad, link=link,
                          extra={"categories": list(keep)})
