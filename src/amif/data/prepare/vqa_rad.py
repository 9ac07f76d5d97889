"""VQA-RAD: the OSF release (``VQA_RAD Dataset Public.json``) or the MEVF split files (``trainset.json``).

VQA-RAD ships no validation split. The converter moves a seeded fraction of the training *images*, with
all their questions, into ``val`` so that no image is shared between train and val. (The official test
questions are about images that also appear in the training questions; that is how the dataset was built,
and ``amif data check`` reports it unless told ``--allow-shared-images``.)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from amif.data.prepare.common import (
    BadRows,
    DatasetCard,
    ImageStore,
    carve_by_image,
    check_source,
    find_image,
    find_root,
    load_json_list,
    normalize_answer_type,
    prepare_out,
    require_dict,
    require_str,
    write_prepared,
)
from amif.data.records import VQARecord
from amif.errors import ConfigError, DataError

OSF_FILE = "VQA_RAD Dataset Public.json"
OSF_IMAGES = "VQA_RAD Image Folder"
MEVF_FILES = {"train": "trainset.json", "test": "testset.json"}
MEVF_IMAGE_DIRS = ("images", OSF_IMAGES)
TEST_PHRASE_TYPES = frozenset({"test_freeform", "test_para"})
TRAIN_PHRASE_TYPES = frozenset({"freeform", "para"})

CARD = DatasetCard(
    name="vqa-rad",
    title="VQA-RAD",
    homepage="https://osf.io/89kps/ (Open Science Framework); MEVF split files: "
             "https://github.com/aioz-ai/MICCAI19-MedVQA",
    licence="CC0 1.0 (public domain dedication), as stated for the OSF release. The images come from MedPix "
            "(https://medpix.nlm.nih.gov/).",
    citation="""@article{lau2018vqarad,
  title   = {A dataset of clinically generated visual questions and answers about radiology images},
  author  = {Lau, Jason J. and Gayen, Soumya and Ben Abacha, Asma and Demner-Fushman, Dina},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180251},
  year    = {2018},
  doi     = {10.1038/sdata.2018.251}
}""",
)

_OSF_EXTRA = ("phrase_type", "qid_linked_id", "image_case_url", "image_organ", "evaluation",
              "question_rephrase", "question_relation", "question_frame")
_MEVF_EXTRA = ("phrase_type", "image_organ")


def _is_osf(d: Path) -> bool:
    return (d / OSF_FILE).is_file()


def _is_mevf(d: Path) -> bool:
    return all((d / f).is_file() for f in MEVF_FILES.values())


def _load_json_list(path: Path) -> list[Any]:
    return load_json_list(path)


def _record(row: Any, i: int, path: Path, split: str | None, image_dir: Path, images: ImageStore,
            extra_keys: tuple[str, ...]) -> VQARecord:
    where = f"#{i}"
    row = require_dict(row, path, where)
    if "qid" in row:
        where = f"#{i} (qid {row['qid']!r})"
    if row.get("qid") is None or isinstance(row.get("qid"), (dict, list)):
        raise DataError("missing or invalid field 'qid'", path=path, record=where)
    qid = str(row["qid"]).strip()
    if split is None:  # OSF: the split comes from phrase_type
        phrase = require_str(row, "phrase_type", path, where).lower()
        if phrase in TEST_PHRASE_TYPES:
            split = "test"
        elif phrase in TRAIN_PHRASE_TYPES:
            split = "train"
        else:
            raise DataError(f"unknown phrase_type {row['phrase_type']!r} (expected one of "
                            f"{sorted(TRAIN_PHRASE_TYPES | TEST_PHRASE_TYPES)})", path=path, record=where)
    question = require_str(row, "question", path, where)
    answer = require_str(row, "answer", path, where, allow_numbers=True)
    answer_type = normalize_answer_type(row.get("answer_type"), path, where)
    qtype = row.get("question_type")
    qtype = qtype.strip() if isinstance(qtype, str) and qtype.strip() else None
    image_name = require_str(row, "image_name", path, where)
    source = find_image(image_dir, image_name, path, where)
    image = images.add(source, image_name.replace("\\", "/"), path, where)
    case = row.get("image_case_url")
    study = case.strip() if isinstance(case, str) and case.strip() and case.strip() != "NULL" else None
    extra = {k: row[k] for k in extra_keys if k in row}
    return VQARecord(qid=qid, image=image, question=question, answer=answer, split=split,
                     answer_type=answer_type, question_type=qtype, study_id=study, extra=extra)


def prepare_vqa_rad(
    src: str | Path,
    out: str | Path,
    *,
    layout: str = "auto",
    val_fraction: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
    link: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert VQA-RAD (``layout`` "osf", "mevf" or "auto") into ``out``; returns the summary.

    ``val_fraction`` of the training images (seeded by ``seed``) go, with all their questions, to ``val``.
    """
    src = check_source(src)
    if layout not in ("auto", "osf", "mevf"):
        raise ConfigError(f"unknown VQA-RAD layout {layout!r} (use auto, osf or mevf)")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    osf_root = find_root(src, _is_osf) if layout in ("auto", "osf") else None
    mevf_root = find_root(src, _is_mevf) if layout in ("auto", "mevf") else None
    if layout == "auto" and osf_root and mevf_root:
        raise DataError(f"both the OSF release ({osf_root / OSF_FILE}) and the MEVF split files ({mevf_root}) "
                        "were found; choose one with layout='osf' or layout='mevf' (--layout)", path=src)
    if osf_root is None and mevf_root is None:
        want = {"auto": f"{OSF_FILE!r} or trainset.json + testset.json", "osf": repr(OSF_FILE),
                "mevf": "trainset.json + testset.json"}[layout]
        raise DataError(f"no VQA-RAD files found: expected {want} in this folder or a sub-folder", path=src)

    bad = BadRows(skip_bad)
    images = ImageStore()
    records: list[VQARecord] = []
    if osf_root is not None:
        used_layout = "osf"
        image_dir = osf_root / OSF_IMAGES
        if not image_dir.is_dir():
            raise DataError(f"image folder {OSF_IMAGES!r} not found next to {OSF_FILE!r}", path=osf_root)
        path = osf_root / OSF_FILE
        jobs = [(path, None)]
        extra_keys = _OSF_EXTRA
    else:
        assert mevf_root is not None
        used_layout = "mevf"
        dirs = [mevf_root / d for d in MEVF_IMAGE_DIRS if (mevf_root / d).is_dir()]
        if not dirs:
            raise DataError(f"no image folder ({' or '.join(MEVF_IMAGE_DIRS)}) next to trainset.json",
                            path=mevf_root)
        image_dir = dirs[0]
        jobs = [(mevf_root / MEVF_FILES["train"], "train"), (mevf_root / MEVF_FILES["test"], "test")]
        extra_keys = _MEVF_EXTRA
    for path, split in jobs:
        for i, row in enumerate(_load_json_list(path), start=1):
            try:
                records.append(_record(row, i, path, split, image_dir, images, extra_keys))
            except (DataError, RecursionError, UnicodeError) as e:
                bad.add(e, path, f"#{i}")

    train = [r for r in records if r.split == "train"]
    n_val_images = carve_by_image(train, float(val_fraction), int(seed))
    card = replace(CARD, layout=used_layout, notes=[])
    card.notes.append(
        f"VQA-RAD has no validation split: {n_val_images} of the training images (fraction {val_fraction}, "
        f"seed {seed}) were moved to val together with all of their questions, so train and val share no "
        "image.")
    card.notes.append("The official test questions are asked about images that also appear in the training "
                      "questions (that is how VQA-RAD was built); `amif data check` flags these shared images "
                      "unless run with --allow-shared-images.")
    if used_layout == "osf":
        card.notes.append("Split from phrase_type: test_freeform and test_para -> test; freeform and para -> "
                          "train (before carving val).")
    card.notes.append("answer_type was upper-cased and stripped; numeric answers were written as strings; "
                      "question_type is kept as given (it may list several types, e.g. 'PRES, POS').")
    options = {"layout": used_layout, "val_fraction": val_fraction, "seed": seed, "skip_bad": skip_bad,
               "link": link}
    out = prepare_out(out, src, overwrite)
    carved = {"split": "val", "from": "train", "by": "image", "fraction": val_fraction, "seed": seed,
              "images": n_val_images}
    return write_prepared(out, src, card, records, images, options, bad, link=link, extra={"val_carved": carved})
