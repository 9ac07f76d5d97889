"""Dataset checker: clean folders pass; planted leaks, missing/corrupt images, duplicates are reported."""

from __future__ import annotations

import json
import shutil

import pytest

from amif.data.check import CheckReport, check_dataset
from amif.data.prepare import prepare_dataset
from amif.errors import DataError

from fixtures_official import build_pathvqa, build_vqa_rad_osf


@pytest.fixture(scope="module")
def prepared(module_tmp):
    base = module_tmp("check")
    prepare_dataset("pathvqa", build_pathvqa(base / "src"), base / "pathvqa", link=False)
    return base / "pathvqa"


def _copy(prepared, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(prepared, dst)
    return dst


def _append(root, split, **record):
    rec = {"split": split, **record}
    with (root / f"{split}.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def test_clean_dataset_passes(prepared):
    report = check_dataset(prepared)
    assert isinstance(report, CheckReport)
    assert report.ok and not report.leaks and not report.errors, report.to_text()
    assert report.counts == {"train": 3, "val": 2, "test": 2}
    assert report.images_checked == 5
    assert "OK" in report.to_text()


def test_planted_image_leak_is_caught(prepared, tmp_path):
    root = _copy(prepared, tmp_path)
    shutil.copy(root / "images/test/test_0001.jpg", root / "images/train/train_9999.jpg")  # renamed copy
    _append(root, "train", qid="planted", image="images/train/train_9999.jpg", question="What is seen?",
            answer="tumour")
    report = check_dataset(root)
    assert not report.ok
    assert len(report.shared_images) == 1 and not report.shared_pairs
    leak = report.leaks[0]
    assert leak.splits == ("test", "train")
    assert set(leak.images) == {"images/test/test_0001.jpg", "images/train/train_9999.jpg"}
    text = report.to_text()
    assert "LEAK" in text and "train_9999.jpg" in text and "FAILED" in text
    allowed = check_dataset(root, allow_shared_images=True)
    assert allowed.ok and not allowed.leaks and allowed.warnings


def test_shared_image_question_pair_is_a_leak_even_when_images_may_be_shared(prepared, tmp_path):
    root = _copy(prepared, tmp_path)
    _append(root, "val", qid="again", image="images/test/test_0001.jpg", question="is this a CARCINOMA",
            answer="yes")
    report = check_dataset(root, allow_shared_images=True)
    assert len(report.shared_pairs) == 1 and report.leaks == report.shared_pairs
    assert set(report.shared_pairs[0].qids) == {"again", "test-000002"}
    assert not report.ok


def test_missing_corrupt_images_empty_answers_and_duplicates(prepared, tmp_path):
    root = _copy(prepared, tmp_path)
    (root / "images/val/val_0000.jpg").unlink()
    (root / "images/test/test_0000.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    _append(root, "train", qid="dup", image="images/train/train_0000.jpg", question="What is present ?",
            answer="a granuloma")
    _append(root, "train", qid="empty", image="images/train/train_0001.jpg", question="What else?", answer=" ")
    _append(root, "train", qid="yes-caps", image="images/train/train_0001.jpg", question="Is it red?",
            answer="Yes")
    _append(root, "train", qid="bad", image="../outside.jpg", question="q?", answer="a")
    _append(root, "train", qid="dup", image="images/train/train_0001.jpg", question="Is it blue?", answer="no")
    report = check_dataset(root)
    assert [p.images for p in report.missing_images] == [("images/val/val_0000.jpg",)]
    assert [p.images for p in report.unreadable_images] == [("images/test/test_0000.jpg",)]
    assert [p.qids for p in report.empty_answers] == [("empty",)]
    kinds = sorted(p.kind for p in report.invalid)
    assert kinds == ["duplicate_qid", "invalid_record"]
    assert "escapes the dataset folder" in " ".join(p.message for p in report.invalid)
    assert len(report.duplicate_questions) == 1
    assert set(report.duplicate_questions[0].qids) == {"dup", "train-000002"}
    variants = {p.message for p in report.answer_variants}
    assert any("'Yes'" in m and "'yes'" in m for m in variants)
    assert any("'a granuloma'" in m and "'granuloma'" in m for m in variants)
    assert not report.ok and not report.leaks
    text = report.to_text(max_items=1)
    assert "missing images: 1" in text and "empty answers: 1" in text
    d = report.to_dict()
    assert d["ok"] is False and d["n_errors"] == len(report.errors)
    assert check_dataset(root, decode_images=False).unreadable_images == []


def test_vqa_rad_official_split_shares_images_between_train_and_test(tmp_path):
    out = tmp_path / "rad"
    prepare_dataset("vqa-rad", build_vqa_rad_osf(tmp_path / "src"), out)
    report = check_dataset(out)
    assert report.shared_images and not report.shared_pairs
    assert all("val" not in p.splits or "train" not in p.splits for p in report.shared_images)
    assert check_dataset(out, allow_shared_images=True).ok


def test_unreadable_split_file_and_missing_folder(tmp_path, prepared):
    root = _copy(prepared, tmp_path)
    (root / "val.jsonl").write_text('{"qid": 1,\n')
    report = check_dataset(root)
    assert [p.kind for p in report.invalid] == ["unreadable_file"] and not report.ok
    with pytest.raises(DataError, match="dataset folder not found"):
        check_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no split files"):
        check_dataset(tmp_path / "empty")
