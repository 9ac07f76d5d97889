"""SLAKE converter: English filter, validate.json / validation.json, fields kept, malformed rows."""

from __future__ import annotations

import pytest

from amif.data.prepare import prepare_dataset
from amif.data.records import load_split
from amif.errors import DataError

from fixtures_official import build_slake, slake_rows


def test_english_only_by_default(tmp_path):
    src = build_slake(tmp_path / "src")
    out = tmp_path / "out"
    summary = prepare_dataset("slake", src, out)
    recs = {s: load_split(out, s) for s in ("train", "val", "test")}
    assert {s: len(r) for s, r in recs.items()} == {"train": 3, "val": 1, "test": 1}
    assert summary["filtered_by_language"] == 3
    assert all(r.extra["q_lang"] == "en" for rs in recs.values() for r in rs)
    r = next(r for r in recs["train"] if r.qid == "3")
    assert r.answer == "2" and r.question_type == "Quantity" and r.answer_type == "OPEN"
    assert r.study_id == "xmlab1" and r.image == "images/xmlab1/source.jpg"
    assert r.extra["location"] == "Abdomen" and r.extra["modality"] == "CT" and r.extra["base_type"] == "vqa"
    assert r.extra["triple"] == ["vhead", "_", "_"]
    assert (out / r.image).is_file()
    assert not (out / "images" / "xmlab0" / "mask.png").exists()  # only the question images
    assert summary["splits"]["val"]["CLOSED"] == 1
    readme = (out / "README.md").read_text()
    assert "med-vqa.com/slake" in readme and "q_lang in ['en']" in readme and "ISBI" in readme


def test_keep_all_languages_and_validation_json(tmp_path):
    src = build_slake(tmp_path / "src", val_name="validation.json")
    summary = prepare_dataset("slake", src, tmp_path / "out", languages="all")
    assert {s: c["records"] for s, c in summary["splits"].items()} == {"train": 4, "val": 2, "test": 2}
    zh = [r for r in load_split(tmp_path / "out", "train") if r.extra["q_lang"] == "zh"]
    assert zh[0].answer == "肝脏"
    both = prepare_dataset("slake", src, tmp_path / "out2", languages=["en", "zh"])
    assert both["splits"] == summary["splits"]


def test_nested_slake_folder(tmp_path):
    build_slake(tmp_path / "src" / "Slake1.0")
    assert prepare_dataset("slake", tmp_path / "src", tmp_path / "out")["splits"]["test"]["records"] == 1


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("answer", ["Liver"], "'answer' must be a string"),
    ("img_name", "../../../secret.jpg", "escapes the dataset folder"),
    ("img_name", "xmlab9/source.jpg", "not found"),
    ("question", "", "'question' is empty"),
    ("answer_type", "OPEN-ENDED", "neither OPEN nor CLOSED"),
])
def test_malformed_rows_name_file_and_row(tmp_path, field, value, expected):
    rows = slake_rows()
    rows["test"][0][field] = value
    src = build_slake(tmp_path / "src", rows=rows)
    with pytest.raises(DataError, match=expected) as e:
        prepare_dataset("slake", src, tmp_path / "out")
    assert "test.json" in str(e.value) and "#1 (qid 20)" in str(e.value)


def test_skip_bad_and_missing_files(tmp_path):
    rows = slake_rows()
    del rows["val"][0]["img_name"]
    rows["train"].append(7)
    src = build_slake(tmp_path / "src", rows=rows)
    summary = prepare_dataset("slake", src, tmp_path / "out", skip_bad=True)
    assert summary["n_skipped"] == 2
    assert {s["file"].rsplit("/", 1)[-1] for s in summary["skipped"]} == {"validate.json", "train.json"}
    assert summary["splits"]["val"]["records"] == 0
    (src / "validate.json").unlink()
    with pytest.raises(DataError, match="validate.json or validation.json"):
        prepare_dataset("slake", src, tmp_path / "out2", skip_bad=True)
    (src / "validation.json").write_text("[]")
    (src / "test.json").write_text("[{not json")
    with pytest.raises(DataError, match=r"test\.json: malformed JSON at line 1"):
        prepare_dataset("slake", src, tmp_path / "out3", skip_bad=True)
