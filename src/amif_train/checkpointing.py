"""Checkpoints a kill cannot tear, that load without running code, and run folders that are never reused.

* :class:`AtomicCheckpointIO`: Lightning's checkpoint I/O with atomic same-folder writes
  (:func:`amif.safe_io.atomic_path`) and ``weights_only=True`` loads that check the tensors against the
  module, so a file that does not fit the config is a one-line :class:`CheckpointError`.
* :class:`LastCheckpoint`: ``last.ckpt`` after every ``every_n_steps`` optimizer steps and at the end
  of every training epoch, whatever the validation interval.
* :func:`prepare_run_dir`: refuses a used output folder unless resuming, refuses ``--resume`` without a
  checkpoint, checks that the folder is writable and deletes temporary files of an interrupted run.
* :func:`prune_checkpoints` / :func:`checked_checkpoint`: only the tracked checkpoints stay, and a path
  stored inside a checkpoint is followed only inside the run's checkpoint folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from amif.errors import CheckpointError, ConfigError
from amif.safe_io import atomic_path, load_torch_file, remove_stale_temps, replace_folder, temp_folder

LAST = "last.ckpt"
# a run folder holding any of these was used by an earlier run
RUN_FILES = ("config.yaml", "run_info.json", "checkpoints", "model", "summary.json", "logs")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target folder, fsync, rename; safe, checked loads."""

    def __init__(self, module: torch.nn.Module | None = None) -> None:
        self.module = module

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        ckpt = load_torch_file(path, map_location=map_location or "cpu")
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
            raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
        if self.module is not None:
            check_fits(self.module, ckpt["state_dict"], path)
        return ckpt


def check_fits(module: torch.nn.Module, state: dict[str, Any], path: Any) -> None:
    """One-line :class:`CheckpointError` unless ``state`` has exactly the module's tensor names and shapes."""
    expected = module.state_dict()
    shape = lambda t: tuple(t.shape) if hasattr(t, "shape") else None  # noqa: E731
    wrong = [f"{k} {shape(v)} (config: {shape(expected[k])})" for k, v in state.items()
             if k in expected and shape(v) != shape(expected[k])]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if wrong or missing or unexpected:
        parts = [f"{len(x)} {what} (first: {x[0]})" for x, what in
                 ((wrong, "tensor(s) of another shape"), (missing, "missing tensor(s)"),
                  (unexpected, "unexpected tensor(s)")) if x]
        raise CheckpointError(f"{path}: this checkpoint does not fit the config: {'; '.join(parts)}")


class FolderModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose restored state names only checkpoint files in its own folder.

    The state inside ``last.ckpt`` lists the best checkpoints by path; a path elsewhere (planted or from a
    moved run) is dropped on load, so it is never loaded as "the best model" nor deleted as a worse one.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        folder = Path(self.dirpath or ".")

        def ours(p: str) -> bool:
            return bool(p) and in_folder(Path(p), folder) and p.endswith(".ckpt")

        self.best_k_models = {k: v for k, v in self.best_k_models.items() if ours(k)}
        if self.last_model_path and not ours(self.last_model_path):
            self.last_model_path = ""
        if not self.best_k_models:
            self.best_model_path, self.best_model_score, self.kth_best_model_path = "", None, ""
            return
        better, worse = (max, min) if self.mode == "max" else (min, max)
        self.best_model_path = better(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]
        self.kth_best_model_path = worse(self.best_k_models, key=self.best_k_models.get)
        self.kth_value = self.best_k_models[self.kth_best_model_path]


def in_folder(p: Path, folder: Path) -> bool:
    """Whether ``p`` (symlinks followed) is directly inside ``folder``."""
    try:
        return p.resolve().parent == folder.resolve()
    except (OSError, RuntimeError):
        return False


class LastCheckpoint(Checkpoint):
    """Writes ``dirpath/last.ckpt`` every ``every_n_steps`` optimizer steps (0: never) and at every epoch end."""

    def __init__(self, dirpath: Path, every_n_steps: int = 0) -> None:
        self.path = Path(dirpath) / LAST
        self.every_n_steps = int(every_n_steps)
        self._saved_at = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or self._saved_at == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: optimiser, loops, callbacks
        self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_at = -1  # an end-of-epoch state differs from a mid-epoch one of the same step
        self._save(trainer)


def prepare_run_dir(out: Path, resume: bool) -> Path | None:
    """Check the output folder of a training run; returns ``last.ckpt`` when resuming, else None.

    A fresh run refuses a folder that an earlier run used (pick a new ``run.output_dir``, or ``--resume``),
    so no earlier result is overwritten in place. ``--resume`` without ``last.ckpt`` is an error.
    """
    last = out / "checkpoints" / LAST
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.output_dir {out} exists and is not a folder")
    if resume:
        if not last.is_file():
            raise CheckpointError(f"--resume: no checkpoint to resume from at {last}")
    elif out.is_dir():
        used = [n for n in RUN_FILES if (out / n).exists()]
        if used:
            raise ConfigError(f"run.output_dir {out} holds an earlier run ({', '.join(used)}): choose a new "
                              "folder, or pass --resume to continue that run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"run.output_dir {out} is not writable: {e.strerror or e}") from e
    remove_stale_temps(out)
    return last if resume else None


def checked_checkpoint(path: str, folder: Path) -> Path:
    """``path`` (taken from a checkpoint's callback state) if it is a file inside ``folder``, else an error."""
    p = Path(path)
    if not in_folder(p, folder) or p.suffix != ".ckpt" or not p.is_file():
        raise CheckpointError(f"the selected checkpoint {path!r} is not a checkpoint file in {folder}")
    return p


def prune_checkpoints(folder: Path, keep: set[str]) -> list[Path]:
    """Delete ``*.ckpt`` files in ``folder`` other than ``last.ckpt`` and ``keep`` (file paths)."""
    keep_resolved = {Path(k).resolve() for k in keep if k} | {(folder / LAST).resolve()}
    removed = []
    for p in sorted(folder.glob("*.ckpt")):
        if p.resolve() not in keep_resolved:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_model_folder(final: Path, save: Callable[[Path], Any]) -> Path:
    """Run ``save(folder)`` into a temporary sibling folder, then publish it as ``final`` in one rename."""
    tmp = temp_folder(final)
    try:
        save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, final)
    return final
