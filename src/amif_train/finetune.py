"""``amif finetune``: fine-tune on train, select on validation, evaluate the selected model on test once."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from amif.data.mirror import with_mirrored_copies
from amif.data.records import load_split, split_file
from amif.data.transforms import build_eval_transform, build_train_transform
from amif.data.vqa_dataset import VQADataset
from amif.evaluation import autocast_dtype_for, evaluate_dataset
from amif.models.vqa import AMiFVQA
from amif.protocols import build_answer_lists
from amif.safe_io import atomic_write_text, load_torch_file
from amif_train.callbacks import progress_bar
from amif_train.checkpointing import (
    AtomicCheckpointIO,
    FolderModelCheckpoint,
    LastCheckpoint,
    checked_checkpoint,
    prepare_run_dir,
    prune_checkpoints,
    write_model_folder,
)
from amif_train.config import FinetuneConfig, resolve_batch_size
from amif_train.reporting import format_table, write_results
from amif_train.resume import EpochSampler, KeyedItems, ResumeState, resumable_fit
from amif_train.run_info import csv_log_version, write_run_info
from amif_train.vqa_module import VQAModule

log = logging.getLogger("amif")


def build_datasets(cfg: FinetuneConfig, image_size: int) -> dict[str, Any]:
    """Records, answer lists and datasets of the three splits, as the protocol prescribes."""
    root = Path(cfg.data.root)
    d = cfg.data
    recs = {name: load_split(root, split) for name, split in (("train", d.train_split), ("val", d.val_split),
                                                               ("test", d.test_split))}
    lists = build_answer_lists(
        recs["train"], recs["val"], recs["test"], protocol=d.protocol, prior_mode=cfg.model.gca.prior_mode,
        max_prior_length=cfg.model.gca.max_prior_length, train_on_val=d.train_on_val,
    )
    a = d.augment
    train_tf = (
        build_train_transform(image_size, tuple(a.scale), a.randaug_n, a.randaug_m, a.randaug_p, a.hflip)
        if a.enabled else build_eval_transform(image_size)
    )
    eval_tf = build_eval_transform(image_size)
    kw = {"image_size": image_size, "blank_images": d.blank_images}
    train_records = recs["train"] + (recs["val"] if d.train_on_val else [])
    train_flip = None
    if d.mirror_train:
        train_records, train_flip = with_mirrored_copies(train_records)
    datasets = {
        "train": VQADataset(root, train_records, train_tf, source=str(split_file(root, d.train_split)),
                            flip=train_flip, **kw),
        "val": VQADataset(root, recs["val"], eval_tf, source=str(split_file(root, d.val_split)), **kw),
        "test": VQADataset(root, recs["test"], eval_tf, source=str(split_file(root, d.test_split)), **kw),
    }
    qtypes = sorted({r.question_type for rs in recs.values() for r in rs if r.question_type})
    return {"records": recs, "lists": lists, "datasets": datasets, "question_types": qtypes}


class VQADataModule(L.LightningDataModule):
    """Train / val loaders; ``collate_fn`` (``AMiFVQA.collate()``) tokenises in the workers. The training
    order and augmentations are functions of (seed, epoch, position)
    (:mod:`amif_train.resume`), so a resumed run sees the same batches. Under DDP, validation uses an
    *unrepeated* distributed sampler: every validation question is scored exactly once across ranks
    (Lightning's default sampler pads ranks by repeating samples), so the count-state metrics give
    exact accuracies."""

    def __init__(self, train, val, batch_size: int, eval_batch_size: int, num_workers: int, seed: int = 0, *,
                 collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        super().__init__()
        self.train_ds, self.val_ds = KeyedItems(train, seed), val
        self.sampler = EpochSampler(train, seed)
        self.seed = seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.kw = {"collate_fn": collate_fn, "num_workers": num_workers, "persistent_workers": num_workers > 0}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_ds, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
                          generator=torch.Generator().manual_seed(self.seed), **self.kw)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_ds is None:
            return []
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(self.val_ds, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        # its own generator: creating its iterator leaves the global torch RNG (dropout) alone
        return DataLoader(self.val_ds, batch_size=self.eval_batch_size, sampler=sampler,
                          generator=torch.Generator(), **self.kw)


def _is_global_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def run_finetune(cfg: FinetuneConfig, *, resume: bool = False, model: AMiFVQA | None = None,
                 callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Fine-tune, select on validation, save the selected model and evaluate it on the test split.

    A fresh run needs an unused ``run.output_dir``; ``resume`` continues ``checkpoints/last.ckpt``
    exactly (docs/reliability.md). ``callbacks`` are extra Lightning callbacks.
    """
    L.seed_everything(cfg.run.seed, workers=True)
    cfg = resolve_batch_size(cfg)  # run.batch_size: per device, from run.global_batch_size when set
    out = Path(cfg.run.output_dir)
    last = prepare_run_dir(out, resume) if _is_global_zero() else (out / "checkpoints" / "last.ckpt" if resume
                                                                    else None)
    image_size = cfg.model.image_encoder.image_size
    data = build_datasets(cfg, image_size)
    lists = data["lists"]
    write_run_info(out, cfg, {"protocol": lists.protocol, "protocol_description": lists.description,
                              "n_records": {k: len(v) for k, v in data["records"].items()},
                              "n_candidates": len(lists.candidates), "n_vocabulary": len(lists.vocabulary)})
    if model is None:
        model = AMiFVQA(cfg.model, lists.candidates, lists.vocabulary)
        if cfg.run.init_from:
            loaded = model.load_encoder_weights(cfg.run.init_from)
            log.info("initialised %d encoder/fusion tensors from %s", len(loaded), cfg.run.init_from)
    model.meta = {"protocol": lists.protocol, "protocol_description": lists.description,
                  "dataset": str(cfg.data.root), "blank_images": cfg.data.blank_images}
    module = VQAModule(model, cfg.run, data["question_types"])
    ds = data["datasets"]
    select_on_val = not cfg.data.train_on_val
    datamodule = VQADataModule(ds["train"], ds["val"] if select_on_val else None, cfg.run.batch_size,
                               cfg.run.eval_batch_size, cfg.data.num_workers, seed=cfg.run.seed,
                               collate_fn=model.collate())
    # The selected (best on val) checkpoint; last.ckpt every run.checkpoint_every_n_steps steps and
    # after every epoch (validated or not); the sampler position and RNG states inside both.
    ckdir = out / "checkpoints"
    ckpt = FolderModelCheckpoint(
        dirpath=ckdir, monitor="val/overall" if select_on_val else None, mode="max",
        save_top_k=cfg.run.save_top_k if select_on_val else 0,
        filename="epoch{epoch:03d}-overall{val/overall:.4f}", auto_insert_metric_name=False,
    )
    resume_state = ResumeState(datamodule.sampler, cfg.run.batch_size)
    trainer = L.Trainer(
        default_root_dir=out, max_epochs=cfg.run.max_epochs, max_steps=cfg.run.max_steps,
        accelerator=cfg.run.accelerator, devices=cfg.run.devices, strategy=cfg.run.strategy,
        precision=cfg.run.precision, accumulate_grad_batches=cfg.run.accumulate_grad_batches,
        gradient_clip_val=cfg.run.gradient_clip_val,
        callbacks=[resume_state, *callbacks, ckpt, LastCheckpoint(ckdir, cfg.run.checkpoint_every_n_steps),
                   *progress_bar(cfg.run)],
        plugins=[AtomicCheckpointIO(module)],
        logger=[CSVLogger(out, name="logs", version=csv_log_version(out, resume)),
                TensorBoardLogger(out, name="tensorboard", version="")],
        log_every_n_steps=cfg.run.log_every_n_steps, enable_progress_bar=cfg.run.progress_bar,
        check_val_every_n_epoch=cfg.run.val_every_n_epochs, num_sanity_val_steps=0,
        limit_val_batches=1.0 if select_on_val else 0,
    )
    with resumable_fit():
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last else None, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    prune_checkpoints(ckdir, set(ckpt.best_k_models))
    selected = f"final weights (step {trainer.global_step})"
    if select_on_val and ckpt.best_model_path:  # none when training ended before the first validation
        path = checked_checkpoint(ckpt.best_model_path, ckdir)
        module.load_state_dict(load_torch_file(path)["state_dict"])
        selected = str(path)
    # Lightning's teardown leaves the model on the CPU: save from there, then evaluate on the device
    # (and at the precision) training used
    device = trainer.strategy.root_device
    model = module.model.cpu().eval()
    model_dir = write_model_folder(out / "model", model.save_pretrained)
    model.to(device)
    autocast = autocast_dtype_for(cfg.run.precision, device)
    summary: dict[str, Any] = {"output_dir": str(out), "model_dir": str(model_dir), "selected_checkpoint": selected,
                               "protocol": lists.protocol, "evaluation_device": str(device),
                               "per_device_batch_size": cfg.run.batch_size}
    info = {"protocol": lists.protocol, "protocol_description": lists.description, "model": str(model_dir),
            "dataset": str(cfg.data.root), "blank_images": cfg.data.blank_images}
    if select_on_val:
        _, val_metrics = evaluate_dataset(model, ds["val"], batch_size=cfg.run.eval_batch_size,
                                          question_types=data["question_types"], autocast_dtype=autocast)
        summary["val"] = val_metrics
    rows, metrics = evaluate_dataset(model, ds["test"], batch_size=cfg.run.eval_batch_size,
                                     question_types=data["question_types"], progress=cfg.run.progress_bar,
                                     autocast_dtype=autocast)
    write_results(out / "results_test.json", metrics=metrics, predictions=rows, split=cfg.data.test_split, **info)
    summary["test"] = metrics
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(f"\nTest split ({len(rows)} questions, protocol {lists.protocol}):\n"
          + format_table({"AMiF": metrics}))
    return summary
