"""Fine-tuning diagnosis: validation accuracy per question type and the most frequent predictions every
N training steps.

Trains with ``amif finetune``'s Lightning module (``VQAModule``: model, optimiser groups, schedule, loss)
and data module, without checkpoints, logs or the test evaluation, with the training images read once
and kept in memory, so that settings can be compared quickly (docs/demo.md, "How the demo got here").

    python benchmarks/diagnose_finetune.py --data /tmp/demo/data --steps 400 --every 100
    python benchmarks/diagnose_finetune.py --data /tmp/demo/data model.decoder.cross_attention_init=bert
    python benchmarks/diagnose_finetune.py --data /tmp/demo/data data.blank_images=true
    python benchmarks/diagnose_finetune.py --data /tmp/demo/data model.fusion.attention_init=bert
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset

from amif.answers import exact_match
from amif.models.vqa import AMiFVQA
from amif_demo.augment import augment
from amif_train.config import load_config
from amif_train.finetune import VQADataModule, build_datasets
from amif_train.vqa_module import VQAModule

LESION = ("presence", "count", "position", "size")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "finetune.yaml"


def cache(ds) -> tuple[torch.Tensor, list[str], list[str], list[str], list[str]]:
    """A split's images (stacked), questions, answers, question types and answer types."""
    return columns([ds[i] for i in range(len(ds))])


def columns(items: list[dict[str, Any]]) -> tuple[torch.Tensor, list[str], list[str], list[str], list[str]]:
    """Loaded items as :func:`evaluate` reads them: images (stacked), questions, answers, types."""
    return (torch.stack([it["pixel_values"] for it in items]), [it["question"] for it in items],
            [it["answer"] for it in items], [it["question_type"] for it in items],
            [(it["answer_type"] or "").upper() for it in items])


class CachedItems(Dataset):
    """The training items, each read once through the dataset (its transform applied once), optionally
    shifted by up to 4 px with brightness / contrast jitter each time it is served (``shift``)."""

    def __init__(self, items: list[dict[str, Any]], shift: bool) -> None:
        self.items, self.shift = items, shift

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        if self.shift:
            item = {**item, "pixel_values": augment(item["pixel_values"][None], flips=False)[0]}
        return item


def evaluate(model: AMiFVQA, val, batch: int = 64) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Validation accuracy (%) by question type, answer type, both, LESION and ALL; top 3 predictions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits, n, preds = Counter(), Counter(), Counter()
    with torch.no_grad():
        for j in range(0, len(val[1]), batch):
            q, qm = model.tokenize_questions(val[1][j:j + batch])
            idx = model.rank(val[0][j:j + batch].to(device), q.to(device), qm.to(device)).indices[:, 0].tolist()
            for i, k in enumerate(idx):
                pred, qt = model.answer_candidates[k], val[3][j + i]
                ok = exact_match(pred, val[2][j + i])
                at = val[4][j + i]
                for key in (qt, "ALL", at, f"{qt}/{at}") + (("LESION",) if qt in LESION else ()):
                    hits[key] += ok
                    n[key] += 1
                preds[pred] += 1
    model.train(was_training)
    return {k: round(100 * hits[k] / n[k]) for k in sorted(n)}, preds.most_common(3)


class Report(L.Callback):
    """Every ``every`` optimiser steps (and at the last): mean training loss since the last report,
    elapsed time, validation accuracies and the most frequent predictions."""

    def __init__(self, val, every: int, steps: int, train=None) -> None:
        self.val, self.every, self.steps, self.train = val, every, steps, train
        self.losses: list[float] = []
        self.t0 = time.time()

    def on_train_batch_end(self, trainer: L.Trainer, module: VQAModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))
        step = trainer.global_step
        if step % self.every == 0 or step == self.steps:
            acc, top = evaluate(module.model, self.val)
            recent = self.losses[-self.every:]
            print(f"step {step} loss {sum(recent) / len(recent):.3f} ({time.time() - self.t0:.0f} s) "
                  f"val {acc} most frequent {top}", flush=True)
            if self.train is not None:
                print(f"step {step} train {evaluate(module.model, self.train)[0]}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (e.g. amif data demo --out ...)")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image-encoder-state", help="load this state dict (probe_image_encoder.py --save) into "
                   "the image encoder after init_from")
    p.add_argument("--freeze-image-encoder", action="store_true",
                   help="train everything but the image encoder (= run.freeze_image_encoder=true)")
    p.add_argument("--no-cache", action="store_true",
                   help="load training images through the dataset every step (needed for data.augment)")
    p.add_argument("--shift-augment", action="store_true",
                   help="shift the cached training images by up to 4 px and jitter brightness / contrast "
                        "(probe_image_encoder.py's augmentation without flips)")
    p.add_argument("--train-types", help="train on these question types only (comma-separated, e.g. "
                   "presence,count); validation still covers every type")
    p.add_argument("--train-eval", type=int, default=0, metavar="N",
                   help="also report accuracy on N training questions (every N-th of the split's order)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    extra = ["run.freeze_image_encoder=true"] if a.freeze_image_encoder else []
    cfg = load_config(a.config, [f"data.root={a.data}", *a.overrides, *extra])
    torch.manual_seed(cfg.run.seed)
    d = build_datasets(cfg, cfg.model.image_encoder.image_size)
    model = AMiFVQA(cfg.model, d["lists"].candidates, d["lists"].vocabulary)
    if cfg.run.init_from:
        model.load_encoder_weights(cfg.run.init_from)
    if a.image_encoder_state:
        model.image_encoder.load_state_dict(torch.load(a.image_encoder_state))
    module = VQAModule(model, cfg.run, d["question_types"])  # applies the run's freezing and feature caching

    train_ds = d["datasets"]["train"]
    if a.no_cache:
        if a.train_types or a.shift_augment:
            raise SystemExit("--train-types and --shift-augment need the cached training images (no --no-cache)")
        train: Dataset = train_ds
    else:
        items = [train_ds[i] for i in range(len(train_ds))]
        if a.train_types:
            items = [it for it in items if it["question_type"] in set(a.train_types.split(","))]
            print(f"training on {len(items)} questions of types {a.train_types}")
        train = CachedItems(items, a.shift_augment)
    val = cache(d["datasets"]["val"])
    train_eval = None
    if a.train_eval:
        if a.no_cache:
            raise SystemExit("--train-eval needs the cached training images (no --no-cache)")
        train_eval = columns(items[:: max(1, len(items) // a.train_eval)][: a.train_eval])
    data = VQADataModule(train, None, cfg.run.batch_size, cfg.run.eval_batch_size, 0, cfg.run.seed,
                         collate_fn=model.collate())
    trainer = L.Trainer(max_steps=a.steps, accelerator=cfg.run.accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=cfg.run.gradient_clip_val or None, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[Report(val, a.every, a.steps, train_eval)])
    trainer.fit(module, datamodule=data)


if __name__ == "__main__":
    main()
