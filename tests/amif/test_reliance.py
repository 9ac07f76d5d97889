"""Image reliance: blank / shuffled evaluations, answer-change shares, the evaluate command's report."""

from __future__ import annotations

import json

import pytest
import torch

from amif.data.records import load_split
from amif.data.transforms import build_eval_transform
from amif.data.vqa_dataset import VQADataset
from amif.reliance import ReplacedImages, changed_share, shuffled_order
from amif_train.cli import main as cli_main

from helpers import make_shapes_dataset, save_micro_model


@pytest.fixture(scope="module")
def setup(module_tmp):
    tmp = module_tmp("reliance")
    data = make_shapes_dataset(tmp / "data", n_images=20)
    return {"data": data, "model": save_micro_model(tmp / "model")}


def test_shuffle_gives_every_question_another_image():
    images = ["a", "a", "b", "c", "c", "c", "d", "e"]
    perm = shuffled_order(images, seed=3)
    assert sorted(perm) == list(range(len(images)))
    assert all(images[i] != images[j] for i, j in enumerate(perm))
    assert perm == shuffled_order(images, seed=3) and perm != shuffled_order(images, seed=4)


def test_replaced_images(setup):
    recs = load_split(setup["data"], "test")
    ds = VQADataset(setup["data"], recs, build_eval_transform(32), image_size=32)
    blank = ReplacedImages(ds, "blank")
    assert blank[0]["blank"] and torch.count_nonzero(blank[0]["pixel_values"]) == 0
    shuffled = ReplacedImages(ds, "shuffled")
    assert shuffled.n_same_image == 0
    for i in range(len(ds)):
        j = shuffled.order[i]
        assert torch.equal(shuffled[i]["pixel_values"], ds[j]["pixel_values"])
        assert shuffled[i]["qid"] == ds[i]["qid"] and recs[i].image != recs[j].image


def test_changed_share_per_group():
    real = [{"qid": "1", "prediction": "yes", "question_type": "a"}, {"qid": "2", "prediction": "no", "question_type": "b"}]
    other = [{"qid": "1", "prediction": "no"}, {"qid": "2", "prediction": "no"}]
    assert changed_share(real, other) == {"overall": 0.5, "qtype/a": 1.0, "qtype/b": 0.0}
    with pytest.raises(ValueError, match="aligned"):
        changed_share(real, other[::-1])


def test_evaluate_reports_reliance_and_calibration(setup, tmp_path, capsys):
    out = tmp_path / "res.json"
    assert cli_main(["evaluate", "--model", str(setup["model"]), "--data", str(setup["data"]),
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    rel = doc["image_reliance"]
    assert set(rel) >= {"blank", "shuffled", "sensitivity", "n_same_image_shuffled"}
    for cond in ("blank", "shuffled"):
        assert 0 <= rel[cond]["overall"] <= 1 and "qtype/position" in rel[cond]
        assert set(rel["sensitivity"][cond]) == {"overall", "qtype/position"}
    # the shares are recomputable from the real run and a blank run
    blank_out = tmp_path / "blank.json"
    assert cli_main(["evaluate", "--model", str(setup["model"]), "--data", str(setup["data"]), "--blank-images",
                     "--out", str(blank_out)]) == 0
    blank = json.loads(blank_out.read_text())
    assert blank["image_reliance"] is None  # nothing to blank or shuffle in a blank-image run
    assert blank["metrics"]["overall"] == pytest.approx(rel["blank"]["overall"])
    changed = [a["prediction"] != b["prediction"] for a, b in zip(doc["predictions"], blank["predictions"])]
    assert rel["sensitivity"]["blank"]["overall"] == pytest.approx(sum(changed) / len(changed))
    assert 0 <= doc["metrics"]["ece"] <= 1
    assert "Image reliance" in printed and "changed (shuffled)" in printed and "calibration error" in printed
    assert cli_main(["evaluate", "--model", str(setup["model"]), "--data", str(setup["data"]),
                     "--no-image-reliance", "--out", str(tmp_path / "fast.json")]) == 0
    assert json.loads((tmp_path / "fast.json").read_text())["image_reliance"] is None
