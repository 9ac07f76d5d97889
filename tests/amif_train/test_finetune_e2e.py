"""End to end: fine-tune the tiny model, evaluate, save, reload in a fresh process, same predictions."""

import json
import subprocess
import sys

import pytest

from amif_train.config import load_config
from amif_train.finetune import run_finetune

from helpers import MICRO, TINY_CONFIG, make_shapes_dataset


@pytest.fixture(scope="module")
def finetuned(module_tmp):
    tmp = module_tmp("e2e")
    root = make_shapes_dataset(tmp / "data", n_images=20)
    cfg = load_config(TINY_CONFIG, MICRO + [f"data.root={root}", f"run.output_dir={tmp / 'run'}",
                                            "run.max_epochs=2", "run.batch_size=8", "run.log_every_n_steps=1"])
    summary = run_finetune(cfg)
    return root, tmp / "run", summary


def test_run_writes_config_commit_versions_and_results(finetuned):
    root, out, summary = finetuned
    assert (out / "config.yaml").is_file()
    info = json.loads((out / "run_info.json").read_text())
    assert set(info["git"]) == {"commit", "dirty"} and info["packages"]["torch"]
    assert info["protocol"] == "clean"
    assert (out / "checkpoints" / "last.ckpt").is_file()
    results = json.loads((out / "results_test.json").read_text())
    assert results["protocol"] == "clean" and results["split"] == "test"
    assert len(results["predictions"]) == summary["test"]["n_overall"] == 8
    first = results["predictions"][0]
    assert {"qid", "question", "answer", "prediction", "correct", "ranked"} <= set(first)
    assert first["ranked"][0]["answer"] == first["prediction"]
    assert all(0 <= r["prob"] <= 1 for r in first["ranked"])
    assert "val" in summary and summary["val"]["n_overall"] == 8


def test_fresh_process_gives_identical_predictions(finetuned, tmp_path):
    root, out, _ = finetuned
    res = tmp_path / "again.json"
    cmd = [sys.executable, "-m", "amif_train.cli", "evaluate", "--model", str(out / "model"), "--data", str(root),
           "--out", str(res)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    before = json.loads((out / "results_test.json").read_text())["predictions"]
    after = json.loads(res.read_text())["predictions"]
    assert [p["ranked"] for p in before] == [p["ranked"] for p in after]
    assert "overall" in proc.stdout


def test_predict_command_on_one_image(finetuned):
    root, out, _ = finetuned
    image = sorted((root / "images").glob("*.png"))[0]
    cmd = [sys.executable, "-m", "amif_train.cli", "predict", "--model", str(out / "model"), "--image", str(image),
           "--question", "Which side is the square on?", "--top-k", "3", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    assert len(answers) == 3 and abs(sum(a["prob"] for a in answers) - 1) < 0.2
    from amif.inference import VQAPredictor

    predictor = VQAPredictor.from_pretrained(out / "model")
    api = predictor.answer(image, "Which side is the square on?", top_k=3)
    assert [a for a, _ in api] == [a["answer"] for a in answers]
    from pydicom.data import get_testdata_file

    dicom = predictor.answer(get_testdata_file("CT_small.dcm"), "Is the square on the left?", top_k=2)
    assert len(dicom) == 2 and dicom[0][1] >= dicom[1][1]


def test_resume_continues_from_last_checkpoint(finetuned):
    import torch

    root, out, _ = finetuned
    last = out / "checkpoints" / "last.ckpt"
    steps_before = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    cfg = load_config(out / "config.yaml", ["run.max_epochs=3"])
    run_finetune(cfg, resume=True)
    steps_after = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert steps_before > 0 and steps_after == steps_before * 3 // 2  # one more epoch, not three
    assert (out / "logs" / "metrics.csv").is_file() and (out / "logs" / "resume1" / "metrics.csv").is_file()


def test_cli_reports_config_errors_cleanly(tmp_path):
    cmd = [sys.executable, "-m", "amif_train.cli", "finetune", "--config", str(TINY_CONFIG), "run.bogus=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "unknown key config.run.bogus" in proc.stderr and "Traceback" not in proc.stderr
