"""Evaluation runs on the device (and precision) training used; ``--device`` for evaluate / predict."""

import pytest
import torch
import yaml

import amif_train.finetune as finetune
from amif.errors import ConfigError
from amif.evaluation import autocast_dtype_for, resolve_device
from amif.inference import VQAPredictor
from amif_train.config import load_config

from helpers import MICRO, TINY_CONFIG, make_shapes_dataset


def test_resolve_device_defaults_to_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a torch device name"):
        resolve_device("gpu0")


def test_autocast_follows_training_precision_on_gpu_only():
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert autocast_dtype_for("bf16-mixed", gpu) is torch.bfloat16
    assert autocast_dtype_for("16-mixed", gpu) is torch.float16
    assert autocast_dtype_for("32-true", gpu) is None
    assert autocast_dtype_for("bf16-mixed", cpu) is None


@pytest.fixture(scope="module")
def finetuned(module_tmp):
    """A tiny fine-tuning run whose evaluation calls are recorded (device of the model, autocast)."""
    tmp = module_tmp("evaldev")
    root = make_shapes_dataset(tmp / "data", n_images=20)
    calls = []
    real = finetune.evaluate_dataset

    def recording(model, dataset, **kw):
        calls.append((next(model.parameters()).device, kw.get("autocast_dtype")))
        return real(model, dataset, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(finetune, "evaluate_dataset", recording)
    try:
        cfg = load_config(TINY_CONFIG, MICRO + [f"data.root={root}", f"run.output_dir={tmp / 'run'}",
                                                "run.max_epochs=1", "run.global_batch_size=8",
                                                "run.accumulate_grad_batches=2"])
        summary = finetune.run_finetune(cfg)
    finally:
        mp.undo()
    return root, tmp / "run", summary, calls


def test_finetune_evaluates_on_the_training_device(finetuned):
    _, out, summary, calls = finetuned
    assert summary["evaluation_device"] == "cpu"  # the trainer's root device on this machine
    assert [c[0].type for c in calls] == ["cpu", "cpu"]  # validation selection and the test split
    assert all(c[1] is None for c in calls)  # 32-true: no autocast


def test_global_batch_size_gives_the_per_device_batch(finetuned):
    _, out, summary, _ = finetuned
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["run"]["global_batch_size"] == 8
    assert resolved["run"]["batch_size"] == summary["per_device_batch_size"] == 4  # 8 / (1 device x 2 accumulation)


def test_predictor_device_argument(finetuned):
    _, out, _, _ = finetuned
    predictor = VQAPredictor.from_pretrained(out / "model", device="cpu")
    assert predictor.device == torch.device("cpu")


def test_cli_device_flags(finetuned, capsys):
    from amif_train.cli import main

    root, out, _, _ = finetuned
    image = sorted((root / "images").glob("*.png"))[0]
    rc = main(["predict", "--model", str(out / "model"), "--image", str(image), "--question",
               "is the square on the left?", "--device", "cpu", "--json"])
    assert rc == 0 and capsys.readouterr().out.startswith("[{")
    if torch.cuda.is_available():
        return
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(root), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "CUDA is not available" in err
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(root), "--device", "cpu", "--bf16"]) == 2
    assert "--bf16 is for evaluation on a GPU" in capsys.readouterr().err
