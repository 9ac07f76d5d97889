"""PathVQA: ``qas/{train,val,test}/{split}_qa.pkl`` and ``images/{train,val,test}/*.jpg`` (optionally under ``pvqa/``).

The pickles hold a list of dicts with ``image`` (file stem), ``question`` and ``answer``. They are read with
an unpickler that only builds plain Python containers and numbers (and numpy scalars), never arbitrary
objects, so a hostile or corrupt file fails with a :class:`DataError` instead of running code.

PathVQA has no answer-type field: a question is CLOSED when its answer is yes/no and OPEN otherwise, the
rule the papers reporting PathVQA results use.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
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
    json_safe,
    prepare_out,
    require_dict,
    require_str,
    safe_relative,
    write_prepared,
    yes_no_answer_type,
)
from amif.data.records import SPLITS, VQARecord
from amif.errors import DataError

CARD = DatasetCard(
    name="pathvqa",
    title="PathVQA",
    homepage="https://github.com/UCSD-AI4H/PathVQA",
    licence="MIT for the question-answer data (GitHub repository). The images and captions were taken from "
            "pathology textbooks and the PEIR digital library; their copyrights stay with those publishers.",
    citation="""@article{he2020pathvqa,
  title   = {{PathVQA}: 30000+ Questions for Medical Visual Question Answering},
  author  = {He, Xuehai and Zhang, Yichen and Mou, Luntian and Xing, Eric and Xie, Pengtao},
  journal = {arXiv preprint arXiv:2003.10286},
  year    = {2020}
}""",
)

# The only globals a PathVQA pickle may reference: builtin containers and numpy scalar reconstruction.
_ALLOWED_GLOBALS = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "slice"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data is accepted)")
        return super().find_class(module, name)


def load_pickle(path: Path) -> Any:
    """Unpickle plain data from ``path``; any failure is a :class:`DataError` naming the file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read: {e}", path=path) from e
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # a corrupt pickle can raise nearly any exception type
        raise DataError(f"not a readable pickle of plain data ({type(e).__name__}: {e})", path=path) from e


def _qa_file(qas: Path, split: str) -> Path:
    return qas / split / f"{split}_qa.pkl"


def _is_qas(d: Path) -> bool:
    return d.name == "qas" and all(_qa_file(d, s).is_file() for s in SPLITS)


def _is_images(d: Path) -> bool:
    return d.name == "images" and all((d / s).is_dir() for s in SPLITS)


def _find(src: Path, accept: Callable[[Path], bool], name: str) -> Path | None:
    """``src`` itself, or the folder ``name`` inside ``src`` or one of its sub-folders, that ``accept`` takes."""
    if accept(src):
        return src
    hit = find_root(src, lambda d: accept(d / name), depth=2)
    return None if hit is None else hit / name


def _record(row: Any, i: int, path: Path, split: str, image_dir: Path, images: ImageStore) -> VQARecord:
    where = f"#{i}"
    row = require_dict(row, path, where)
    stem = require_str(row, "image", path, where)
    where = f"#{i} (image {stem!r})"
    question = require_str(row, "question", path, where)
    answer = require_str(row, "answer", path, where, allow_numbers=True)
    rel = safe_relative(stem, path, where)
    source = find_image(image_dir / split, stem, path, where, suffixes=(".jpg", ".jpeg", ".png"))
    image = images.add(source, f"{split}/{(rel.parent / source.name).as_posix()}", path, where)
    extra = {str(k): json_safe(v) for k, v in row.items() if k not in ("image", "question", "answer", "qid")}
    qid = str(json_safe(row["qid"])) if row.get("qid") is not None and not isinstance(row["qid"], (dict, list)) \
        else f"{split}-{i:06d}"
    return VQARecord(qid=qid, image=image, question=question, answer=answer, split=split,
                     answer_type=yes_no_answer_type(answer), question_type=None, study_id=None, extra=extra)


def prepare_pathvqa(
    src: str | Path,
    out: str | Path,
    *,
    skip_bad: bool = False,
    link: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert PathVQA (pickled QA lists and image folders) into ``out``; returns the summary."""
    src = check_source(src)
    qas = _find(src, _is_qas, "qas")
    if qas is None:
        raise DataError("no PathVQA question files found: expected qas/{train,val,test}/{split}_qa.pkl (or "
                        "pvqa/qas/...) in this folder or a sub-folder", path=src)
    image_root = _find(qas.parent, _is_images, "images") or _find(src, _is_images, "images")
    if image_root is None:
        raise DataError("no PathVQA image folders found: expected images/{train,val,test}/ (or pvqa/images/...)",
                        path=src)
    bad = BadRows(skip_bad)
    images = ImageStore()
    records: list[VQARecord] = []
    for split in SPLITS:
        path = _qa_file(qas, split)
        rows = load_pickle(path)
        if not isinstance(rows, list):
            raise DataError(f"expected a pickled list of question dicts, got {type(rows).__name__}", path=path)
        for i, row in enumerate(rows, start=1):
            try:
                records.append(_record(row, i, path, split, image_root, images))
            except (DataError, RecursionError, UnicodeError) as e:
                bad.add(e, path, f"#{i}")
    card = replace(CARD, layout=f"{qas.relative_to(src).as_posix() or '.'} + "
                                f"{image_root.relative_to(src).as_posix() or '.'}", notes=[])
    card.notes.append("PathVQA has no answer-type field: answer_type is CLOSED when the answer is yes or no "
                      "(case-insensitive) and OPEN otherwise.")
    card.notes.append("qid is the pickle's qid when present, else SPLIT-ROW (row number in the pickle); the "
                      "pickles' other fields are kept in extra. The official splits are used as they are.")
    options = {"skip_bad": skip_bad, "link": link}
    out = prepare_out(out, src, overwrite)
    return write_prepared(out, src, card, records, images, options, bad, link=link)
