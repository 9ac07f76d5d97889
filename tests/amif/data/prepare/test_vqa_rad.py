"""VQA-RAD converter: OSF release and MEVF split files, val carved by image, malformed rows."""

from __future__ import annotations

import json

import pytest

from amif.data.prepare import PREPARERS, format_summary, prepare_dataset
from amif.data.records import load_split
from amif.errors import ConfigError, DataError

from fixtures_official import RAD_OSF_FILE, build_vqa_rad_mevf, build_vqa_rad_osf, rad_osf_rows


def _all(out):
    return {s: load_split(out, s) for s in ("train", "val", "test")}


def test_osf_release_converts_with_val_carved_by_image(tmp_path):
    src = build_vqa_rad_osf(tmp_path / "src")
    out = tmp_path / "out"
    summary = prepare_dataset("vqa-rad", src, out, val_fraction=0.34, seed=1)
    recs = _all(out)
    assert summary["layout"] == "osf"
    assert {s: len(r) for s, r in recs.items()} == {s: summary["splits"][s]["records"] for s in recs}
    assert len(recs["test"]) == 3  # test_freeform + test_para
    assert len(recs["train"]) + len(recs["val"]) == 9
    train_images = {r.image for r in recs["train"]}
    val_images = {r.image for r in recs["val"]}
    assert val_images and not train_images & val_images  # carved by image
    assert len(val_images) == 2  # round(0.34 * 6)
    by_q = {r.question: r for rs in recs.values() for r in rs}
    count = by_q["How many lesions are in image 2?"]
    assert count.answer == "2" and count.answer_type == "OPEN"
    assert count.question_type == "COUNT, PRES"  # kept as given
    assert by_q["Is there a lesion in image 1?"].answer_type == "CLOSED"  # "CLOSED " normalised
    assert by_q["What organ is shown?"].answer_type == "OPEN"  # "open" normalised
    assert by_q["What organ is shown?"].extra["phrase_type"] == "test_freeform"
    assert by_q["What organ is shown?"].study_id.endswith("case-synpic1")
    for rs in recs.values():
        for r in rs:
            assert (out / r.image).is_file() and r.image.startswith("images/synpic")
    assert not (out / "images" / "synpic7.jpg").exists()  # unused image not copied
    readme = (out / "README.md").read_text()
    assert "no validation split" in readme and "osf.io/89kps" in readme and "CC0" in readme
    assert "@article" in readme and "val_fraction" in readme
    assert json.loads((out / "prepare.json").read_text())["splits"] == summary["splits"]
    assert "OPEN" in format_summary(summary)


def test_val_carving_is_seeded_and_configurable(tmp_path):
    src = build_vqa_rad_osf(tmp_path / "src")
    a = prepare_dataset("vqa-rad", src, tmp_path / "a", seed=3, val_fraction=0.5)
    b = prepare_dataset("vqa_rad", src, tmp_path / "b", seed=3, val_fraction=0.5)
    assert [r.qid for r in load_split(tmp_path / "a", "val")] == [r.qid for r in load_split(tmp_path / "b", "val")]
    assert a["splits"]["val"]["images"] == 3 and b["splits"] == a["splits"]
    none = prepare_dataset("vqa-rad", src, tmp_path / "c", val_fraction=0.0)
    assert none["splits"]["val"]["records"] == 0 and none["splits"]["train"]["records"] == 9
    assert a["val_carved"] == {"split": "val", "from": "train", "by": "image", "fraction": 0.5, "seed": 3,
                               "images": 3}
    with pytest.raises(ConfigError, match="val_fraction"):
        prepare_dataset("vqa-rad", src, tmp_path / "d", val_fraction=1.0)
    with pytest.raises(ConfigError, match="layout"):
        prepare_dataset("vqa-rad", src, tmp_path / "d", layout="hf")


@pytest.mark.parametrize("image_dir", ["images", "VQA_RAD Image Folder"])
def test_mevf_split_files(tmp_path, image_dir):
    src = build_vqa_rad_mevf(tmp_path / "src", image_dir=image_dir)
    summary = prepare_dataset("vqa-rad", src, tmp_path / "out")
    assert summary["layout"] == "mevf"
    assert summary["splits"]["test"]["records"] == 3
    assert summary["splits"]["train"]["records"] + summary["splits"]["val"]["records"] == 9
    assert summary["splits"]["test"]["CLOSED"] == 1 and summary["splits"]["test"]["OPEN"] == 2


def test_nested_source_folder_and_both_layouts(tmp_path):
    src = tmp_path / "src"
    build_vqa_rad_osf(src / "VQA_RAD")
    assert prepare_dataset("vqa-rad", src, tmp_path / "o1")["layout"] == "osf"
    build_vqa_rad_mevf(src / "data_RAD")
    with pytest.raises(DataError, match="layout='osf' or layout='mevf'"):
        prepare_dataset("vqa-rad", src, tmp_path / "o2")
    assert prepare_dataset("vqa-rad", src, tmp_path / "o3", layout="mevf")["layout"] == "mevf"


def test_missing_field_names_file_and_row(tmp_path):
    rows = rad_osf_rows()
    del rows[2]["question"]
    src = build_vqa_rad_osf(tmp_path / "src", rows)
    with pytest.raises(DataError) as e:
        prepare_dataset("vqa-rad", src, tmp_path / "out")
    msg = str(e.value)
    assert RAD_OSF_FILE in msg and "#3" in msg and "question" in msg
    assert not (tmp_path / "out").exists()  # nothing written on failure


def test_skip_bad_counts_and_lists_rows(tmp_path):
    rows = rad_osf_rows()
    rows[0]["image_name"] = "../../etc/passwd"
    rows[1]["answer_type"] = "MAYBE"
    rows[4]["image_name"] = "synpic99.jpg"  # does not exist
    rows.append("not a record")
    src = build_vqa_rad_osf(tmp_path / "src", rows)
    summary = prepare_dataset("vqa-rad", src, tmp_path / "out", skip_bad=True)
    assert summary["n_skipped"] == 4
    reasons = " | ".join(s["reason"] for s in summary["skipped"])
    assert "escapes the dataset folder" in reasons and "MAYBE" in reasons and "synpic99.jpg" in reasons
    assert all(RAD_OSF_FILE in s["file"] for s in summary["skipped"])
    assert "#13" in reasons
    total = sum(c["records"] for c in summary["splits"].values())
    assert total == len(rad_osf_rows()) - 3
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "4 malformed row(s) were skipped" in readme and "synpic99.jpg" in readme


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("image_name", "../../x.jpg", "escapes the dataset folder"),
    ("image_name", "synpic42.jpg", "not found"),
    ("answer", None, "'answer' must be a string"),
    ("answer", "  ", "'answer' is empty"),
    ("phrase_type", "weird", "unknown phrase_type"),
])
def test_malformed_rows_raise(tmp_path, field, value, expected):
    rows = rad_osf_rows()
    rows[5][field] = value
    src = build_vqa_rad_osf(tmp_path / "src", rows)
    with pytest.raises(DataError, match=expected) as e:
        prepare_dataset("vqa-rad", src, tmp_path / "out")
    assert RAD_OSF_FILE in str(e.value) and "#6" in str(e.value)


def test_mevf_malformed_row_names_trainset(tmp_path):
    train = [{"qid": 1, "image_name": "synpic1.jpg", "question": "q?", "answer": ["a"], "answer_type": "OPEN"}]
    src = build_vqa_rad_mevf(tmp_path / "src", train=train)
    with pytest.raises(DataError, match=r"trainset\.json.*#1"):
        prepare_dataset("vqa-rad", src, tmp_path / "out")


def test_options_source_and_output_checks(tmp_path):
    src = build_vqa_rad_osf(tmp_path / "src")
    with pytest.raises(ConfigError, match="unknown option"):
        prepare_dataset("vqa-rad", src, tmp_path / "out", languages="en")
    with pytest.raises(ConfigError, match="unknown dataset"):
        prepare_dataset("mimic", src, tmp_path / "out")
    with pytest.raises(DataError, match="no VQA-RAD files"):
        prepare_dataset("vqa-rad", tmp_path / "src" / "VQA_RAD Image Folder", tmp_path / "out")
    with pytest.raises(DataError, match="source folder not found"):
        prepare_dataset("vqa-rad", tmp_path / "nope", tmp_path / "out")
    with pytest.raises(DataError, match="may not be the source"):
        prepare_dataset("vqa-rad", src, src)
    prepare_dataset("vqa-rad", src, tmp_path / "out")
    with pytest.raises(DataError, match="not empty"):
        prepare_dataset("vqa-rad", src, tmp_path / "out")
    prepare_dataset("vqa-rad", src, tmp_path / "out", overwrite=True, link=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="refusing to overwrite"):
        prepare_dataset("vqa-rad", src, other, overwrite=True)
    assert (other / "keep.txt").exists()
    assert set(PREPARERS) == {"vqa-rad", "slake", "pathvqa", "vqa-med-2019"}
