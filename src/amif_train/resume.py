"""Bit-exact resume: a data order that is a function of (seed, epoch, position), and the RNG states.

* :class:`EpochSampler` shuffles epoch ``e`` with a generator seeded from ``(seed, e)`` (Lightning calls
  ``set_epoch``) and can start an epoch part-way through, so a resumed epoch continues the same order.
* :class:`KeyedItems` wraps a training dataset: before each item it reseeds the dataset's own random
  generators (augmentation pipeline, view choice) from ``(seed, epoch, index)``. An item's
  augmentation therefore does not depend on which worker made it or on what came before it.
* :class:`ResumeState` is a callback whose checkpoint state holds the sampler position and the torch
  (CPU and CUDA), numpy and Python RNG states; after a resume it puts the RNG states back just before
  the first training batch, so dropout and sampled negatives continue the interrupted stream.

Position restore needs one process per run (``world_size == 1``); under DDP Lightning wraps the
sampler in its distributed sampler and a resumed epoch starts from its beginning (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator, Sized
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import ConcatDataset, Dataset, Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)``: a permutation of ``range(n)`` seeded by ``(seed, epoch)``.

    The epoch travels with the index so that :class:`KeyedItems` in a worker process knows it.
    """

    def __init__(self, data: Sized, seed: int) -> None:
        self.n = len(data)
        self.seed = int(seed)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, items to skip) of a resumed epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, items: int) -> None:
        """Continue in ``epoch``, skipping its first ``items`` indices (once). The epoch is set here too:
        Lightning may create the first iterator of a run before it calls ``set_epoch``."""
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(items))

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        epoch = self.epoch
        for i in self.order(epoch)[start:].tolist():
            yield i, epoch

    def __len__(self) -> int:
        return self.n


def _reseed(ds: Any, key: str) -> None:
    for name in ("transform", "teacher_transform"):
        tf = getattr(ds, name, None)
        if tf is not None and hasattr(tf, "reseed_item"):
            tf.reseed_item(f"{key}:{name}")
    if hasattr(ds, "rng"):  # e.g. the pre-training dataset's choice of two views
        ds.rng = random.Random(f"{key}:rng")


class KeyedItems(Dataset):
    """``dataset[(index, epoch)]`` with every random generator of the item seeded from ``(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        ds, local = self.dataset, index
        if isinstance(ds, ConcatDataset):
            part = int(np.searchsorted(ds.cumulative_sizes, index, side="right"))
            local = index - (ds.cumulative_sizes[part - 1] if part else 0)
            ds = ds.datasets[part]
        _reseed(ds, f"{self.seed}:{epoch}:{index}")
        return ds[local]

    def __getattr__(self, name: str) -> Any:  # e.g. ``records`` of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def rng_states() -> dict[str, Any]:
    """The torch (CPU, every CUDA device), numpy and Python RNG states, in a ``weights_only``-safe form."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": [py[0], list(py[1]), py[2]],
    }


def set_rng_states(state: dict[str, Any]) -> None:
    """Put back the states of :func:`rng_states`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))


class ResumeState(Callback):
    """Checkpoints the sampler position and the RNG states; restores them on resume (module docstring)."""

    def __init__(self, sampler: EpochSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self._rng_to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed if trainer is not None else 0
        epoch = self.sampler.epoch
        if done >= self.sampler.n // self.batch_size:  # saved at the end of an epoch: next one from its start
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "batches_done": int(done), "rng": rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._trainer is None or self._trainer.world_size == 1:
            self.sampler.resume_at(state["epoch"], state["batches_done"] * self.batch_size)
        self._rng_to_restore = state["rng"]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # under DDP Lightning wraps the sampler and calls set_epoch on the wrapper only; the epoch must
        # still reach the item keys, or every epoch would repeat the same augmentations
        if self.sampler.epoch != trainer.current_epoch:
            self.sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    _trainer: L.Trainer | None = None


@contextlib.contextmanager
def resumable_fit() -> Iterator[None]:
    """Silences two Lightning warnings that do not apply here: "your dataloader is not resumable"
    (:class:`ResumeState` restores the position, through the sampler) and "checkpoint directory exists
    and is not empty" (a resumed run's own folder; a fresh run refuses a used one)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")
        warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
        yield
