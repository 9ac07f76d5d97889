"""VQA-Med-2019 converter: official ImageCLEF folders, M3AE csv layout, categories, malformed rows."""

from __future__ import annotations

import pytest

from amif.data.prepare import prepare_dataset
from amif.data.records import load_split
from amif.errors import ConfigError, DataError

from fixtures_official import MED_TEST, MED_TEST_FILE, build_vqa_med_2019, build_vqa_med_2019_m3ae


def test_official_layout_all_categories(tmp_path):
    src = build_vqa_med_2019(tmp_path / "src")
    out = tmp_path / "out"
    summary = prepare_dataset("vqa-med-2019", src, out)
    assert summary["layout"].startswith("official")
    assert {s: c["records"] for s, c in summary["splits"].items()} == {"train": 6, "val": 6, "test": 6}
    assert summary["categories"] == ["modality", "organ", "plane", "abnormality"]
    assert summary["splits"]["test"]["question_types"] == {"abnormality": 2, "modality": 2, "organ": 1,
                                                           "plane": 1}
    test = load_split(out, "test")
    closed = {r.question: r.answer_type for r in test}
    assert closed["is this an mri?"] == "CLOSED" and closed["what is abnormal?"] == "OPEN"
    train = load_split(out, "train")
    assert train[0].image == "images/train/synpictrain0.jpg" and (out / train[0].image).is_file()
    assert train[0].qid == "train-modality-1" and train[0].extra == {"image_id": "synpictrain0"}
    assert "imageclef" in (out / "README.md").read_text().lower()


def test_category_subset(tmp_path):
    src = build_vqa_med_2019(tmp_path / "src")
    summary = prepare_dataset("vqamed2019", src, tmp_path / "out", categories="modality, plane,organ")
    assert summary["options"]["categories"] == "modality,organ,plane"
    assert {s: c["records"] for s, c in summary["splits"].items()} == {"train": 4, "val": 4, "test": 4}
    assert all(r.question_type != "abnormality" for r in load_split(tmp_path / "out", "test"))
    assert "Categories kept: modality, organ, plane" in (tmp_path / "out" / "README.md").read_text()
    with pytest.raises(ConfigError, match="unknown VQA-Med-2019 category"):
        prepare_dataset("vqa-med-2019", src, tmp_path / "o2", categories=["colour"])


def test_m3ae_layout(tmp_path):
    src = build_vqa_med_2019_m3ae(tmp_path / "src")
    summary = prepare_dataset("vqa-med-2019", src, tmp_path / "out", categories=["modality", "organ", "plane"])
    assert summary["layout"].startswith("m3ae")
    assert {s: c["records"] for s, c in summary["splits"].items()} == {"train": 4, "val": 4, "test": 4}
    assert load_split(tmp_path / "out", "val")[0].image == "images/val/synpicval0.jpg"


@pytest.mark.parametrize(("key", "line", "file", "lineno", "expected"), [
    ("train/Plane", "synpictrain0|which plane?", "C2_Plane_train.txt", 2, "found 2 field"),
    ("val/Organ", "synpicval0|a|b|c|d", "C3_Organ_val.txt", 2, "found 5 field"),
    ("val/Organ", "synpicval0||ct", "C3_Organ_val.txt", 2, "empty question"),
    ("test", "synpictest0|colour|what colour?|red", MED_TEST_FILE, 7, "unknown category"),
    ("test", "synpictest0|what modality?|ct", MED_TEST_FILE, 7, "image_id|category|question|answer"),
    ("train/Modality", "../../../x|what?|ct", "C1_Modality_train.txt", 3, "escapes the dataset folder"),
    ("train/Modality", "synpic404|what?|ct", "C1_Modality_train.txt", 3, "not found"),
])
def test_bad_pipe_rows(tmp_path, key, line, file, lineno, expected):
    src = build_vqa_med_2019(tmp_path / "src", extra_lines={key: [line]})
    with pytest.raises(DataError, match=expected) as e:
        prepare_dataset("vqa-med-2019", src, tmp_path / "out")
    assert file in str(e.value) and f"line {lineno}" in str(e.value)
    summary = prepare_dataset("vqa-med-2019", src, tmp_path / "out2", skip_bad=True)
    assert summary["n_skipped"] == 1 and summary["skipped"][0]["record"] == f"line {lineno}"
    assert "1 malformed row(s) were skipped" in (tmp_path / "out2" / "README.md").read_text()


def test_rows_of_left_out_categories_are_not_converted(tmp_path):
    src = build_vqa_med_2019(tmp_path / "src", extra_lines={"test": ["synpic404|abnormality|what?|x"]})
    summary = prepare_dataset("vqa-med-2019", src, tmp_path / "out", categories="modality,organ,plane")
    assert summary["splits"]["test"]["records"] == 4 and summary["n_skipped"] == 0
    assert "Left out from the test file: {'abnormality': 3}" in " ".join(summary["notes"])


def test_missing_test_answers(tmp_path):
    src = build_vqa_med_2019(tmp_path / "src")
    (src / MED_TEST / MED_TEST_FILE).unlink()
    with pytest.raises(DataError, match="no VQA-Med-2019 question files for the test split"):
        prepare_dataset("vqa-med-2019", src, tmp_path / "out")
