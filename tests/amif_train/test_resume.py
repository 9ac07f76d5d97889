"""Bit-exact resume: a run SIGKILLed mid-epoch and resumed with ``resume=True`` logs the same per-step losses,
validation metrics and final weights as an uninterrupted run with the same seed (fine-tuning and pre-training).

The kill is deterministic: :class:`KillAt` SIGKILLs its own process right after optimizer step N, in a
subprocess. ``run.checkpoint_every_n_steps`` puts ``last.ckpt`` mid-epoch, before the kill, so the resumed
run replays steps after that checkpoint from the middle of an epoch.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file

from amif_train.config import PretrainConfig, load_config
from amif_train.finetune import run_finetune
from amif_train.pretrain import run_pretrain
from amif_train.resume import EpochSampler, KeyedItems, rng_states, set_rng_states

from helpers import LEAN, MICRO, TINY_CONFIG, make_shapes_dataset


class KillAt(L.Callback):
    """SIGKILL this process right after optimizer step ``step`` (no clean-up runs: a real crash)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def finetune_cfg(root: Path, out: Path, every: int = 4):
    # augmentation on (keyed per item), dropout on (torch RNG), 6 steps per epoch, last.ckpt every 4 steps
    return load_config(TINY_CONFIG, MICRO + LEAN + [
        f"data.root={root}", f"run.output_dir={out}", "data.augment.enabled=true", "run.max_epochs=2",
        "run.batch_size=4", "run.log_every_n_steps=1", f"run.checkpoint_every_n_steps={every}",
        "run.accelerator=cpu",
    ])


def pretrain_cfg(root: Path, out: Path, every: int = 2):
    from test_pretrain_e2e import CONFIG, _overrides

    # the demo config (run.val_every_n_epochs 6: no validation in these 3 epochs), one worker process as
    # the demo uses, augmentation and dropout on; 4 steps per epoch, last.ckpt every 2 steps
    return load_config(CONFIG, _overrides(root, out, "run.max_epochs=3", "run.batch_size=8", "data.num_workers=1",
                                          f"run.checkpoint_every_n_steps={every}", "model.fusion.dropout=0.1"),
                       cls=PretrainConfig)


KILL_SCRIPT = """
from pathlib import Path
from test_resume import KillAt, {make}, {run}
{run}({make}(Path({root!r}), Path({out!r})), callbacks=[KillAt({step})])
"""


def kill_at(step: int, make: str, run: str, root: Path, out: Path) -> None:
    code = KILL_SCRIPT.format(make=make, run=run, root=str(root), out=str(out), step=step)
    # the killed run computes with as many threads as this process's uninterrupted and resumed runs:
    # float sums differ in their last bits between thread counts
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    # the child imports this test module and its helpers from where this process found them
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def logged(path: Path, key: str) -> dict[int, str]:
    """``{step: value}`` of one metric in a CSV log, as written (full repr: an exact comparison)."""
    with path.open(encoding="utf-8") as f:
        return {int(r["step"]): r[key] for r in csv.DictReader(f) if r.get(key)}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not wa[k].equal(wb[k])]
    assert not different, different[:5]


def test_finetune_killed_mid_epoch_resumes_bit_exactly(tmp_path):
    root = make_shapes_dataset(tmp_path / "data", n_images=20)  # 24 training questions: 6 steps per epoch
    base = run_finetune(finetune_cfg(root, tmp_path / "base", every=0))  # checkpoints do not change the numbers
    out = tmp_path / "killed"
    kill_at(11, "finetune_cfg", "run_finetune", root, out)  # step 11 is mid-epoch 2; last.ckpt is from step 8
    ckdir = out / "checkpoints"
    (ckdir / "epoch099-overall0.9999.ckpt").write_bytes(b"an untracked checkpoint an earlier kill left")
    resumed = run_finetune(finetune_cfg(root, out), resume=True)

    before = logged(out / "logs" / "metrics.csv", "train/loss")
    after = logged(out / "logs" / "resume1" / "metrics.csv", "train/loss")
    full = logged(tmp_path / "base" / "logs" / "metrics.csv", "train/loss")
    assert len(full) == 12 and sorted(after) == list(range(8, 12))  # steps 8.. replayed from the checkpoint
    assert {s: full[s] for s in before} == before
    assert {s: full[s] for s in after} == after
    val_full = logged(tmp_path / "base" / "logs" / "metrics.csv", "val/overall")
    val_resumed = logged(out / "logs" / "resume1" / "metrics.csv", "val/overall")
    assert val_resumed and {s: val_full[s] for s in val_resumed} == val_resumed
    assert Path(resumed["selected_checkpoint"]).name == Path(base["selected_checkpoint"]).name
    assert resumed["test"] == base["test"]
    assert_same_weights(tmp_path / "base" / "model" / "model.safetensors", out / "model" / "model.safetensors")
    # only what the config keeps: last.ckpt and the save_top_k=1 best; no temporary files anywhere
    assert sorted(p.name for p in ckdir.iterdir()) == sorted(["last.ckpt", Path(resumed["selected_checkpoint"]).name])
    assert not [p for p in out.rglob("*") if ".amif-tmp-" in p.name]


def test_pretrain_killed_mid_epoch_resumes_bit_exactly(tmp_path):
    from helpers import make_caption_dataset

    root = make_caption_dataset(tmp_path / "data", {"train": 8, "val": 3})  # 32 pairs: 4 steps per epoch
    run_pretrain(pretrain_cfg(root, tmp_path / "base", every=0))
    out = tmp_path / "killed"
    kill_at(7, "pretrain_cfg", "run_pretrain", root, out)  # mid-epoch 2; last.ckpt from step 6, no validation yet
    run_pretrain(pretrain_cfg(root, out), resume=True)
    for key in ("train/loss", "train/itgc", "train/imvc", "train/utgc"):
        full = logged(tmp_path / "base" / "logs" / "metrics.csv", key)
        after = logged(out / "logs" / "resume1" / "metrics.csv", key)
        assert len(full) == 12 and sorted(after) == list(range(6, 12)), key
        assert {s: full[s] for s in after} == after, key
    assert_same_weights(tmp_path / "base" / "model" / "model.safetensors", out / "model" / "model.safetensors")


def test_epoch_sampler_order_is_a_function_of_seed_epoch_and_position():
    data = list(range(10))
    s = EpochSampler(data, seed=3)
    s.set_epoch(1)
    full = list(s)
    assert sorted(i for i, _ in full) == data and {e for _, e in full} == {1}
    s.set_epoch(2)
    assert list(s) != full  # another epoch, another order
    fresh = EpochSampler(data, seed=3)
    fresh.resume_at(1, 4)  # a resumed run: epoch 1 after 4 items
    assert list(fresh) == full[4:]
    assert list(fresh) == full  # the skip applies once


def test_keyed_items_do_not_depend_on_order():
    from PIL import Image

    from amif.data.transforms import build_train_transform

    class Images:
        transform = build_train_transform(16, randaug_p=1.0, seed=5)

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return self.transform(Image.linear_gradient("L").rotate(30 * i).resize((24, 24)).convert("RGB"))

    items = KeyedItems(Images(), seed=0)
    first = [items[(i, 0)] for i in range(3)]
    again = [items[(i, 0)] for i in reversed(range(3))][::-1]
    assert all(a.equal(b) for a, b in zip(first, again))
    assert not items[(0, 1)].equal(first[0])  # the next epoch augments differently


def test_rng_states_round_trip_and_load_weights_only(tmp_path):
    import random

    import numpy as np
    import torch

    state = rng_states()
    torch.save(state, tmp_path / "rng.pt")
    drawn = (torch.rand(3), np.random.rand(), random.random())
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), drawn[0]) and np.random.rand() == drawn[1] and random.random() == drawn[2]


def test_last_checkpoint_is_written_whatever_the_validation_interval(tmp_path):
    root = make_shapes_dataset(tmp_path / "data", n_images=20)
    out = tmp_path / "run"
    cfg = finetune_cfg(root, out)
    cfg.run.max_epochs, cfg.run.val_every_n_epochs, cfg.run.checkpoint_every_n_steps = 1, 5, 0
    cfg.data.augment.enabled = False
    summary = run_finetune(cfg)
    import torch

    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 0
    # no validation ran (max_epochs 1 < val_every_n_epochs 5): the final weights are selected, no crash
    assert summary["selected_checkpoint"] == "final weights (step 6)"


def test_epoch_reaches_the_item_keys_when_lightning_wraps_the_sampler():
    from types import SimpleNamespace

    from amif_train.resume import ResumeState

    sampler = EpochSampler(range(8), seed=0)  # under DDP Lightning calls set_epoch on its wrapper only
    ResumeState(sampler, batch_size=2).on_train_epoch_start(SimpleNamespace(current_epoch=3), None)
    assert sampler.epoch == 3 and {e for _, e in sampler} == {3}
