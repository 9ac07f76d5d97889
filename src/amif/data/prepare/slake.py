"""SLAKE: ``train.json``, ``validate.json`` (or ``validation.json``), ``test.json`` and ``imgs/xmlabN/source.jpg``.

SLAKE is bilingual; by default only the English questions (``q_lang == "en"``) are kept, as in the papers
that report SLAKE results. ``content_type`` becomes the record's ``question_type``; the image folder
(``xmlabN``) is the ``study_id``.
"""

from __future__ import annotations

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
    load_json_list,
    normalize_answer_type,
    prepare_out,
    require_dict,
    require_str,
    safe_relative,
    write_prepared,
)
from amif.data.records import VQARecord
from amif.errors import DataError

SPLIT_FILES = {"train": ("train.json",), "val": ("validate.json", "validation.json"), "test": ("test.json",)}
IMAGE_DIR = "imgs"
_EXTRA = ("img_id", "q_lang", "location", "modality", "base_type", "triple")

CARD = DatasetCard(
    name="slake",
    title="SLAKE",
    homepage="https://www.med-vqa.com/slake/",
    licence="CC BY 4.0 according to the metadata of the Hugging Face mirror (BoKelvin/SLAKE); check the terms "
            "on the official site before redistributing.",
    citation="""@inproceedings{liu2021slake,
  title     = {{SLAKE}: A Semantically-Labeled Knowledge-Enhanced Dataset for Medical Visual Question Answering},
  author    = {Liu, Bo and Zhan, Li-Ming and Xu, Li and Ma, Lin and Yang, Yan and Wu, Xiao-Ming},
  booktitle = {IEEE 18th International Symposium on Biomedical Imaging (ISBI)},
  pages     = {1650--1654},
  year      = {2021}
}""",
)


def _is_slake(d: Path) -> bool:
    return (d / "train.json").is_file() and (d / "test.json").is_file() and (d / IMAGE_DIR).is_dir()


def _load(path: Path) -> list[Any]:
    return load_json_list(path)


def _record(row: Any, i: int, path: Path, split: str, root: Path, images: ImageStore, languages: set[str] | None
            ) -> VQARecord | None:
    where = f"#{i}"
    row = require_dict(row, path, where)
    if "qid" in row:
        where = f"#{i} (qid {row['qid']!r})"
    lang = row.get("q_lang")
    if languages is not None:
        if not isinstance(lang, str):
            raise DataError("missing or invalid field 'q_lang'", path=path, record=where)
        if lang.strip().lower() not in languages:
            return None
    if row.get("qid") is None or isinstance(row.get("qid"), (dict, list)):
        raise DataError("missing or invalid field 'qid'", path=path, record=where)
    qid = str(row["qid"]).strip()
    question = require_str(row, "question", path, where)
    answer = require_str(row, "answer", path, where, allow_numbers=True)
    answer_type = normalize_answer_type(row.get("answer_type"), path, where)
    ctype = row.get("content_type")
    qtype = ctype.strip() if isinstance(ctype, str) and ctype.strip() else None
    img_name = require_str(row, "img_name", path, where)
    rel = safe_relative(img_name, path, where)
    source = find_image(root / IMAGE_DIR, img_name, path, where)
    image = images.add(source, rel.as_posix(), path, where)
    study = rel.parts[0] if len(rel.parts) > 1 else (str(row["img_id"]) if row.get("img_id") is not None else None)
    extra = {k: row[k] for k in _EXTRA if k in row}
    return VQARecord(qid=qid, image=image, question=question, answer=answer, split=split,
                     answer_type=answer_type, question_type=qtype, study_id=study, extra=extra)


def prepare_slake(
    src: str | Path,
    out: str | Path,
    *,
    languages: str | list[str] | None = "en",
    skip_bad: bool = False,
    link: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert SLAKE into ``out``; returns the summary.

    ``languages``: the ``q_lang`` values to keep ("en" by default; e.g. "en,zh"; "all" or None keeps every
    question).
    """
    src = check_source(src)
    root = find_root(src, _is_slake)
    if root is None:
        raise DataError(f"no SLAKE files found: expected train.json, test.json and {IMAGE_DIR}/ in this folder "
                        "or a sub-folder", path=src)
    if isinstance(languages, str):
        keep = None if languages.strip().lower() == "all" else {x.strip().lower() for x in languages.split(",")
                                                                  if x.strip()}
    else:
        keep = None if languages is None else {str(x).strip().lower() for x in languages}
    bad = BadRows(skip_bad)
    images = ImageStore()
    records: list[VQARecord] = []
    dropped = 0
    used_files = []
    for split, names in SPLIT_FILES.items():
        path = next((root / n for n in names if (root / n).is_file()), None)
        if path is None:
            raise DataError(f"no {' or '.join(names)} for the {split} split", path=root)
        used_files.append(path.name)
        for i, row in enumerate(_load(path), start=1):
            try:
                rec = _record(row, i, path, split, root, images, keep)
            except (DataError, RecursionError, UnicodeError) as e:
                bad.add(e, path, f"#{i}")
                continue
            if rec is None:
                dropped += 1
            else:
                records.append(rec)
    card = replace(CARD, layout="official (" + ", ".join(used_files) + f", {IMAGE_DIR}/)", notes=[])
    if keep is None:
        card.notes.append("All languages were kept (q_lang is stored in extra.q_lang).")
    else:
        card.notes.append(f"Only questions with q_lang in {sorted(keep)} were kept; {dropped} other question(s) "
                          "were left out (the official SLAKE results use the English questions).")
    card.notes.append(f"{used_files[1]} became the val split; question_type = content_type; study_id = the "
                      "image folder (xmlabN); location, modality, base_type, triple, img_id, q_lang are in "
                      "extra.")
    options = {"languages": "all" if keep is None else ",".join(sorted(keep)), "skip_bad": skip_bad, "link": link}
    out = prepare_out(out, src, overwrite)
    return write_prepared(out, src, card, records, images, options, bad, link=link,
                          extra={"filtered_by_language": dropped})
