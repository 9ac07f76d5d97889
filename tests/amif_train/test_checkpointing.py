"""Checkpoints and run folders: no code runs from a checkpoint, no torn or orphaned file after kills, and a
one-line error (file named, no traceback) for every bad checkpoint, config or output folder."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from amif.safe_io import TEMP_MARK, load_torch_file, remove_stale_temps
from amif_train.checkpointing import AtomicCheckpointIO
from amif_train.cli import main as cli_main

from helpers import LEAN, MICRO, TINY_CONFIG, make_shapes_dataset


class Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "evil": Payload(marker)}, path)


@pytest.fixture(scope="module")
def run(module_tmp):
    """A finished one-epoch fine-tuning run: (dataset, run folder, overrides that rebuild its config)."""
    tmp = module_tmp("ckpt")
    root = make_shapes_dataset(tmp / "data", n_images=20)
    overrides = MICRO + LEAN + [f"data.root={root}", "run.max_epochs=1", "run.batch_size=8", "run.accelerator=cpu"]
    assert cli_main(["finetune", "--config", str(TINY_CONFIG), f"run.output_dir={tmp / 'run'}", *overrides]) == 0
    return root, tmp / "run", overrides


def finetune(out: Path, overrides: list[str], *extra: str) -> int:
    flags = [e for e in extra if e.startswith("--")]
    more = [e for e in extra if not e.startswith("--")]
    return cli_main(["finetune", "--config", str(TINY_CONFIG), *flags, f"run.output_dir={out}", *overrides, *more])


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("amif: error: ") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def copy_last(run: Path, out: Path) -> Path:
    """A new run folder holding only a hard link to ``run``'s last.ckpt (cheap, same bytes)."""
    (out / "checkpoints").mkdir(parents=True)
    os.link(run / "checkpoints" / "last.ckpt", out / "checkpoints" / "last.ckpt")
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("force_unsafe", [False, True])
def test_malicious_last_ckpt_never_runs(run, tmp_path, capsys, monkeypatch, force_unsafe):
    _, _, ov = run
    if force_unsafe:  # would re-open torch.load's unsafe default if amif left weights_only unset
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "PWNED"
    plant(tmp_path / "out" / "checkpoints" / "last.ckpt", marker)
    assert finetune(tmp_path / "out", ov, "--resume") == 2
    one_line_error(capsys, "last.ckpt", "refused")
    assert not marker.exists()


def _with_best(last: Path, best: str) -> None:
    ckpt = torch.load(last, weights_only=True, map_location="cpu")
    keys = [k for k, v in ckpt["callbacks"].items() if "best_model_path" in v]
    assert keys
    for k in keys:
        state = ckpt["callbacks"][k]
        state["dirpath"] = str(last.parent)  # as a crafted file would: the state then applies to this run
        state["best_model_path"], state["kth_best_model_path"] = best, best
        state["best_k_models"] = {best: torch.tensor(1.0)}
        state["best_model_score"] = torch.tensor(1.0)
    last.unlink()
    torch.save(ckpt, last)


def test_planted_best_checkpoint_in_the_folder_is_refused(run, tmp_path, capsys):
    _, done, ov = run
    out, marker = tmp_path / "out", tmp_path / "PWNED"
    last = copy_last(done, out)
    evil = out / "checkpoints" / "epoch000-overall1.0000.ckpt"
    plant(evil, marker)
    _with_best(last, str(evil))
    assert finetune(out, ov, "--resume") == 2
    one_line_error(capsys, "epoch000-overall1.0000.ckpt", "refused")
    assert not marker.exists()


def test_best_checkpoint_path_outside_the_folder_is_not_followed(run, tmp_path, capsys):
    _, done, ov = run
    out, marker = tmp_path / "out", tmp_path / "PWNED"
    last = copy_last(done, out)
    evil = tmp_path / "elsewhere" / "best.ckpt"
    plant(evil, marker)
    _with_best(last, str(evil))
    assert finetune(out, ov, "--resume") == 0
    assert not marker.exists() and evil.is_file()  # neither loaded nor deleted
    import json

    assert json.loads((out / "summary.json").read_text())["selected_checkpoint"].startswith("final weights")


def test_init_from_and_model_weights_that_are_pickles_are_refused(run, tmp_path, capsys):
    root, done, ov = run
    marker = tmp_path / "PWNED"
    fake = tmp_path / "pre" / "model.safetensors"
    plant(fake, marker)
    assert finetune(tmp_path / "out", ov, f"run.init_from={fake}") == 2
    one_line_error(capsys, str(fake))
    model = tmp_path / "model"
    shutil.copytree(done / "model", model)
    plant(model / "model.safetensors", marker)
    assert cli_main(["evaluate", "--model", str(model), "--data", str(root)]) == 2
    one_line_error(capsys, "model.safetensors")
    assert not marker.exists()


def test_corrupt_model_weights_are_one_line_errors(run, tmp_path, capsys):
    root, done, _ = run
    model = tmp_path / "model"
    shutil.copytree(done / "model", model)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 3])
    assert cli_main(["evaluate", "--model", str(model), "--data", str(root)]) == 2
    one_line_error(capsys, "model.safetensors")


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_last_ckpt_is_a_one_line_error(run, tmp_path, capsys, damage):
    _, done, ov = run
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    data = (done / "checkpoints" / "last.ckpt").read_bytes()
    last.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    assert finetune(tmp_path / "out", ov, "--resume") == 2
    one_line_error(capsys, "last.ckpt")


def test_last_ckpt_of_another_config_is_a_one_line_error(run, tmp_path, capsys):
    _, done, ov = run
    copy_last(done, tmp_path / "out")
    assert finetune(tmp_path / "out", ov, "--resume", "model.fusion.intermediate_size=64") == 2
    one_line_error(capsys, "last.ckpt", "does not fit the config")


def test_used_folder_unwritable_folder_bad_values_and_resume_without_checkpoint(run, tmp_path, capsys):
    _, done, ov = run
    before = {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()}
    assert finetune(done, ov) == 2  # rerun into the folder of a finished run: refused, nothing touched
    one_line_error(capsys, str(done), "--resume")
    assert {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()} == before
    assert finetune(tmp_path / "new", ov, "--resume") == 2
    one_line_error(capsys, "no checkpoint to resume from", "last.ckpt")
    (tmp_path / "file").write_text("x")
    assert finetune(tmp_path / "file" / "run", ov) == 2
    one_line_error(capsys, str(tmp_path / "file"))
    assert finetune(tmp_path / "neg", ov, "run.batch_size=-4") == 2
    one_line_error(capsys, "run.batch_size")


def test_max_steps_shorter_than_an_epoch_keeps_the_final_weights(run, tmp_path):
    _, _, ov = run
    assert finetune(tmp_path / "short", ov, "run.max_steps=1") == 0
    import json

    summary = json.loads((tmp_path / "short" / "summary.json").read_text())
    assert summary["selected_checkpoint"] == "final weights (step 1)"


def _save_forever(folder: str) -> None:
    """Child process: write last.ckpt again and again (a kill lands mid-write), each a bigger step."""
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool (it can hang there)
    io = AtomicCheckpointIO()
    step = 0
    while True:
        step += 1
        w = torch.from_numpy(np.full(2_000_000, step, dtype=np.float32))
        io.save_checkpoint({"state_dict": {"w": w}, "step": step}, Path(folder) / "last.ckpt")


def test_random_kills_leave_no_torn_and_no_orphaned_file(tmp_path, monkeypatch):
    other_fs = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path  # TMPDIR on another file system
    tmpdir = Path(os.path.realpath(other_fs)) / f"amif-test-{os.getpid()}"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", None)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(0)
    steps, stale = [], 0
    try:
        for _ in range(10):
            child = ctx.Process(target=_save_forever, args=(str(folder),))
            child.start()
            deadline = time.monotonic() + 60  # a loaded machine can take long to fork and write the first one
            while not (folder / "last.ckpt").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.3, 0.8))
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            ckpt = load_torch_file(folder / "last.ckpt")  # never torn: loads, and is one whole save
            assert ckpt["state_dict"]["w"].eq(ckpt["step"]).all()
            steps.append(ckpt["step"])
            assert not list(tmpdir.iterdir())  # nothing in TMPDIR
        stale = len(remove_stale_temps(folder))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert stale >= 1  # the kills did land mid-write, leaving temporary files that start-up removes
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]
    assert not [p for p in folder.iterdir() if TEMP_MARK in p.name]
