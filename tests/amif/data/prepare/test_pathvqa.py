"""PathVQA converter: pickles (read safely), pvqa/ prefix, yes/no answer type, malformed rows."""

from __future__ import annotations

import os
import pickle

import pytest

from amif.data.prepare import prepare_dataset
from amif.data.records import load_split
from amif.errors import DataError

from fixtures_official import build_pathvqa, pathvqa_rows


@pytest.mark.parametrize("prefix", ["pvqa", ""])
def test_converts_pickles(tmp_path, prefix):
    src = build_pathvqa(tmp_path / "src", prefix=prefix)
    out = tmp_path / "out"
    summary = prepare_dataset("pathvqa", src, out)
    assert {s: c["records"] for s, c in summary["splits"].items()} == {"train": 3, "val": 2, "test": 2}
    assert summary["splits"]["train"]["CLOSED"] == 2 and summary["splits"]["train"]["OPEN"] == 1
    recs = load_split(out, "test")
    assert [r.answer_type for r in recs] == ["OPEN", "CLOSED"]
    assert recs[0].image == "images/test/test_0000.jpg" and (out / recs[0].image).is_file()
    assert recs[0].qid == "test-000001"
    assert "yes or no" in (out / "README.md").read_text()


def test_extra_pickle_fields_and_numpy_free_values(tmp_path):
    rows = pathvqa_rows()
    rows["train"][0] = {**rows["train"][0], "qid": 17, "answer_type": "yes/no", "label": {3}}
    src = build_pathvqa(tmp_path / "src", rows=rows)
    prepare_dataset("pathvqa", src, tmp_path / "out")
    r = load_split(tmp_path / "out", "train")[0]
    assert r.qid == "17" and r.extra == {"answer_type": "yes/no", "label": [3]}


def test_corrupt_pickle_names_file(tmp_path):
    src = build_pathvqa(tmp_path / "src")
    bad = src / "pvqa" / "qas" / "val" / "val_qa.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="val_qa.pkl.*not a readable pickle"):
        prepare_dataset("pathvqa", src, tmp_path / "out")
    bad.write_bytes(pickle.dumps({"image": "x"}))
    with pytest.raises(DataError, match="val_qa.pkl.*expected a pickled list"):
        prepare_dataset("pathvqa", src, tmp_path / "out")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused(tmp_path):
    src = build_pathvqa(tmp_path / "src")
    (src / "pvqa" / "qas" / "train" / "train_qa.pkl").write_bytes(pickle.dumps([_Evil()]))
    with pytest.raises(DataError, match="train_qa.pkl.*refusing to load"):
        prepare_dataset("pathvqa", src, tmp_path / "out")


@pytest.mark.parametrize(("row", "expected"), [
    ("just a string", "expected an object"),
    ({"image": "test_0000", "question": "q?"}, "missing field 'answer'"),
    ({"image": "test_0000", "question": 5, "answer": "yes"}, "'question' must be a string"),
    ({"image": "../../../../x", "question": "q?", "answer": "yes"}, "escapes the dataset folder"),
    ({"image": "test_0099", "question": "q?", "answer": "yes"}, "not found"),
])
def test_malformed_rows_name_file_and_row(tmp_path, row, expected):
    rows = pathvqa_rows()
    rows["test"].append(row)
    src = build_pathvqa(tmp_path / "src", rows=rows)
    (src / "pvqa" / "images" / "test" / "test_0099.jpg").unlink(missing_ok=True)
    with pytest.raises(DataError, match=expected) as e:
        prepare_dataset("pathvqa", src, tmp_path / "out")
    assert "test_qa.pkl" in str(e.value) and "#3" in str(e.value)
    summary = prepare_dataset("pathvqa", src, tmp_path / "out2", skip_bad=True)
    assert summary["n_skipped"] == 1 and "#3" in summary["skipped"][0]["record"]
    assert summary["splits"]["test"]["records"] == 2


def test_missing_layout(tmp_path):
    src = build_pathvqa(tmp_path / "src")
    with pytest.raises(DataError, match="no PathVQA question files"):
        prepare_dataset("pathvqa", src / "pvqa" / "images", tmp_path / "out")
    (src / "pvqa" / "images" / "val").rename(src / "pvqa" / "images" / "validation")
    with pytest.raises(DataError, match="no PathVQA image folders"):
        prepare_dataset("pathvqa", src, tmp_path / "out")
