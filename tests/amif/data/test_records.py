"""Record format and bad input: every error names the file and the record."""

import json

import pytest
import torch

from amif.data.records import load_split, read_vqa_records
from amif.data.transforms import build_eval_transform
from amif.data.vqa_dataset import VQADataset
from amif.errors import DataError
from amif.evaluation import evaluate_dataset
from amif.protocols import build_answer_lists

from helpers import make_shapes_dataset


def test_malformed_json_line_names_file_and_line(tmp_path):
    f = tmp_path / "train.jsonl"
    good = {"qid": "1", "image": "a.png", "question": "q?", "answer": "yes", "split": "train"}
    f.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=r"train\.jsonl.*line 2.*malformed JSON"):
        read_vqa_records(f)


def test_malformed_json_list_and_missing_fields(tmp_path):
    f = tmp_path / "test.json"
    f.write_text('[{"qid": "1", "image": "a.png"}]')
    with pytest.raises(DataError, match=r"test\.json.*#1 \(qid '1'\).*missing field\(s\) question, answer, split"):
        read_vqa_records(f)
    f.write_text('[{"qid": 1,')
    with pytest.raises(DataError, match=r"test\.json.*malformed JSON"):
        read_vqa_records(f)


def test_empty_question_and_escaping_path_are_errors(tmp_path):
    f = tmp_path / "val.jsonl"
    f.write_text(json.dumps({"qid": "7", "image": "a.png", "question": "  ", "answer": "no", "split": "val"}))
    with pytest.raises(DataError, match=r"val\.jsonl.*qid '7'.*'question' is empty"):
        read_vqa_records(f)
    f.write_text(json.dumps({"qid": "8", "image": "../../x.png", "question": "q", "answer": "no", "split": "val"}))
    with pytest.raises(DataError, match=r"qid '8'.*escapes the dataset folder"):
        read_vqa_records(f)


def test_question_empty_after_normalisation_names_record(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_images=6)
    recs = load_split(root, "train")
    recs[0].question = "?!"
    with pytest.raises(DataError, match=rf"train\.jsonl.*qid '{recs[0].qid}'.*question is empty"):
        VQADataset(root, recs, build_eval_transform(32), image_size=32, source=str(root / "train.jsonl"))


def test_missing_and_unreadable_images_name_file_and_record(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_images=6)
    recs = load_split(root, "train")
    (root / recs[0].image).unlink()
    with pytest.raises(DataError, match=rf"train\.jsonl.*qid '{recs[0].qid}'.*not found"):
        VQADataset(root, recs, build_eval_transform(32), image_size=32, source=str(root / "train.jsonl"))
    (root / recs[2].image).write_bytes(b"this is not an image")
    ds = VQADataset(root, recs[2:], build_eval_transform(32), image_size=32, source=str(root / "train.jsonl"))
    with pytest.raises(DataError, match=rf"train\.jsonl.*qid '{recs[2].qid}'.*{recs[2].image}"):
        ds[0]


def test_blank_images_need_no_files(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_images=6)
    recs = load_split(root, "train")
    for r in recs:
        (root / r.image).unlink(missing_ok=True)
    ds = VQADataset(root, recs, build_eval_transform(32), image_size=32, blank_images=True)
    assert torch.count_nonzero(ds[0]["pixel_values"]) == 0


def test_protocols_choose_vocabulary_and_candidates(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_images=10)
    train, val, test = (load_split(root, s) for s in ("train", "val", "test"))
    test[0].answer = "only in test"
    clean = build_answer_lists(train, val, test, protocol="clean")
    paper = build_answer_lists(train, val, test, protocol="paper")
    assert "only in test" not in clean.candidates and "test" not in clean.vocabulary
    assert "only in test" in paper.candidates and "test" in paper.vocabulary
    assert "LEAKY" in paper.description and clean.protocol == "clean"


def test_answer_absent_from_candidates_is_counted_wrong(tmp_path):
    from amif.models.vqa import AMiFVQA
    from amif_train.config import load_config

    from helpers import MICRO, TINY_CONFIG

    root = make_shapes_dataset(tmp_path / "d", n_images=10)
    test = load_split(root, "test")
    test[0].answer = "a never seen answer"
    model = AMiFVQA(load_config(TINY_CONFIG, MICRO).model, ["left", "right", "yes", "no"], ["left", "right"])
    ds = VQADataset(root, test, build_eval_transform(32), image_size=32)
    rows, metrics = evaluate_dataset(model, ds, batch_size=4, question_types=["position"])
    assert metrics["n_answer_not_in_candidates"] == 1
    assert rows[0]["answer_in_candidates"] is False and rows[0]["correct"] is False
    assert metrics["n_overall"] == len(test)
