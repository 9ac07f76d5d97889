"""``amif pretrain``: one stage of AMiF pre-training on image-caption corpora.

Reads the corpora (bad rows raise a ``DataError`` naming file and row, or are skipped and counted with
``data.skip_bad``), builds the teacher and the model (from ``run.init_from`` for the second stage),
measures retrieval on the held-out corpus before training, trains with checkpoints (``--resume``
continues from ``OUTPUT/checkpoints/last.ckpt``), selects the checkpoint with the best
``val/recall_mean``, and writes ``OUTPUT/model`` (the folder the next stage or fine-tuning starts from)
and ``OUTPUT/summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from amif.data.collate import PretrainCollate
from amif.data.config import CorpusConfig
from amif.data.pretrain_corpora import PretrainDataset, SkipReport, read_corpus
from amif.data.transforms import build_eval_transform, build_pretrain_transform, build_teacher_transform
from amif.errors import ConfigError
from amif.models.pretrain import AMiFPretrainModel
from amif.safe_io import atomic_write_text
from amif.teachers import CaptionSimilarityTeacher, MemoCaptionTeacher, Teacher, load_teacher
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
from amif_train.config import PretrainConfig, count_devices, resolve_batch_size
from amif_train.pretrain_module import PretrainModule
from amif_train.resume import EpochSampler, KeyedItems, ResumeState, resumable_fit
from amif_train.run_info import csv_log_version, write_run_info

log = logging.getLogger("amif")

RUN_LOG = "pretrain.log"
SKIPPED = "skipped_rows.jsonl"
INITIAL = "initial_retrieval.json"


class _RunLog:
    """Appends timestamped lines to ``OUTPUT/pretrain.log`` (and the ``amif`` logger); also captures the
    library's warnings (e.g. the corpus readers' skip summaries) while the run lasts."""

    def __init__(self, out: Path, enabled: bool = True) -> None:
        self.path = out / RUN_LOG
        self.enabled = enabled
        self.handler: logging.Handler | None = None
        if enabled:
            out.mkdir(parents=True, exist_ok=True)
            self.handler = logging.FileHandler(self.path, encoding="utf-8")
            self.handler.setLevel(logging.WARNING)
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger("amif").addHandler(self.handler)

    def __call__(self, msg: str) -> None:
        log.info(msg)
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    def close(self) -> None:
        if self.handler is not None:
            logging.getLogger("amif").removeHandler(self.handler)
            self.handler.close()
            self.handler = None


def _is_global_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def load_teacher_from_config(spec: str, trust_remote_code: bool = False) -> Teacher | None:
    """The teacher named by ``losses.teacher`` (``none`` -> None, hard labels)."""
    s = spec.strip()
    if s.lower() == "none":
        return None
    kwargs: dict[str, Any] = {}
    if Path(s).is_dir() and trust_remote_code:
        kwargs["trust_remote_code"] = True
    with torch.random.fork_rng():  # building a teacher's modules must not move the run's random stream
        teacher = load_teacher(s, "cpu", **kwargs)
    if isinstance(teacher, CaptionSimilarityTeacher):
        teacher = MemoCaptionTeacher(teacher)
    return teacher


def _corpus_root(cfg: PretrainConfig, c: CorpusConfig, where: str) -> str:
    root = c.root or cfg.data.root
    if not root:
        raise ConfigError(f"{where} has no root: set it, or data.root (e.g. data.root=/path/to/dataset)")
    return root


def build_pretrain_datasets(
    cfg: PretrainConfig, teacher: Teacher | None, image_size: int
) -> tuple[Dataset, PretrainDataset | None, SkipReport, dict[str, Any]]:
    """Train dataset (a ``ConcatDataset`` over the corpora), validation dataset (or None), every
    skipped row, and per-corpus counts."""
    d = cfg.data
    a = d.augment
    if a.enabled:
        train_tf = build_pretrain_transform(
            image_size, scale=tuple(a.scale), jitter=tuple(a.jitter), jitter_p=a.jitter_p,
            grayscale_p=a.grayscale_p, randaug_n=a.randaug_n, randaug_m=a.randaug_m, randaug_p=a.randaug_p,
            blur_p=a.blur_p, hflip_p=a.hflip_p, translate=a.translate, seed=cfg.run.seed,
        )
    else:
        train_tf = build_eval_transform(image_size)
    teacher_tf = None
    if teacher is not None and teacher.uses_images:
        teacher_tf = build_teacher_transform(teacher.image_size, teacher.mean, teacher.std)
    validate = d.skip_bad if d.validate_images is None else d.validate_images
    skipped = SkipReport()
    counts: dict[str, Any] = {"train": [], "val": None}

    def read(c: CorpusConfig, where: str, transform, multi_view: bool, tteacher) -> tuple[PretrainDataset, dict]:
        root = _corpus_root(cfg, c, where)
        name = c.name or c.kind
        corpus = read_corpus(c.kind, root, split=c.split, skip_bad=d.skip_bad, max_words=d.max_caption_words,
                             **c.options)
        ds = PretrainDataset(corpus.root, corpus.records, transform, tteacher, multi_view=multi_view,
                             max_words=d.max_caption_words, validate=validate, skip_bad=d.skip_bad, corpus=name)
        skipped.extend(corpus.skipped)
        skipped.extend(ds.skipped)
        info = {"name": name, "kind": c.kind, "root": str(root), "split": c.split, "records": len(ds.records), "items": len(ds),
                "skipped": len(corpus.skipped) + len(ds.skipped),
                "with_counterfactuals": sum(bool((r.extra or {}).get("negative_captions")) for r in ds.records)}
        if len(ds) == 0:
            raise ConfigError(f"{where} ({c.kind} at {root}, split {c.split}) has no usable pairs")
        return ds, info

    names = [c.name or c.kind for c in d.corpora]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.corpora names {names} repeat (a name defaults to the kind): set "
                          "data.corpora[i].name so that each corpus has its own")
    parts = []
    for i, c in enumerate(d.corpora):
        ds, info = read(c, f"data.corpora[{i}]", train_tf, d.multi_view, teacher_tf)
        parts.append(ds)
        counts["train"].append(info)
    lc = cfg.losses  # itc_counterfactuals implies itgc (validate_losses); itm runs from stage 1 on
    need = ("itc_counterfactuals" if lc.itc_counterfactuals else
            "itm_counterfactuals" if lc.itm_counterfactuals and lc.itm and cfg.run.stage >= 1 else None)
    if need and not any(info["with_counterfactuals"] for info in counts["train"]):
        raise ConfigError(f"losses.{need} needs caption records with extra.negative_captions, and no "
                          f"training record of data.corpora ({', '.join(names)}) has any")
    train = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    val = None
    if d.val is not None:
        val, counts["val"] = read(d.val, "data.val", build_eval_transform(image_size), False, None)
    return train, val, skipped, counts


def _skip_summary(skipped: SkipReport, limit: int = 20) -> dict[str, Any]:
    return {"count": skipped.count, "by_kind": skipped.by_kind(), "first": [str(s) for s in list(skipped)[:limit]]}


def _build_model(cfg: PretrainConfig, say) -> AMiFPretrainModel:
    stage = cfg.run.stage
    if cfg.run.init_from:
        model = AMiFPretrainModel.load(cfg.run.init_from, cfg.model, cfg.losses, stage=stage,
                                       train_encoders=cfg.run.train_encoders)
        say(f"initialised every tensor from {cfg.run.init_from}")
    else:
        model = AMiFPretrainModel(cfg.model, cfg.losses, stage=stage, train_encoders=cfg.run.train_encoders)
        if model.encoders_frozen:
            say("WARNING: stage >= 1 without run.init_from: the frozen encoders keep their initial weights")
    if cfg.run.cache_text_features:
        model.cache_frozen_text()
    return model


def _val_metrics(results: list[dict[str, Any]]) -> dict[str, float]:
    if not results:
        return {}
    return {k[len("val/"):]: float(v) for k, v in results[0].items() if k.startswith("val/")}


def run_pretrain(cfg: PretrainConfig, *, resume: bool = False, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run one pre-training stage (see the module docstring); returns the summary (empty on ranks > 0).

    A fresh run needs an unused ``run.output_dir``; ``resume`` continues ``checkpoints/last.ckpt``
    exactly (docs/reliability.md). ``callbacks`` are extra Lightning callbacks.
    """
    L.seed_everything(cfg.run.seed, workers=True)
    cfg = resolve_batch_size(cfg, pretraining=True)  # per-device batch from run.global_batch_size when set
    out = Path(cfg.run.output_dir)
    zero = _is_global_zero()
    last = prepare_run_dir(out, resume) if zero else (out / "checkpoints" / "last.ckpt" if resume else None)
    threads = torch.get_num_threads()
    if cfg.run.cpu_threads is not None:
        torch.set_num_threads(cfg.run.cpu_threads)
    say = _RunLog(out, enabled=zero)
    try:
        return _run(cfg, out, last, say, list(callbacks))
    finally:
        say.close()
        torch.set_num_threads(threads)


def _run(cfg: PretrainConfig, out: Path, last: Path | None, say: _RunLog, callbacks: list[Callback]) -> dict[str, Any]:
    started = time.time()
    teacher = load_teacher_from_config(cfg.losses.teacher, cfg.losses.teacher_trust_remote_code)
    image_size = cfg.model.image_encoder.image_size
    train_ds, val_ds, skipped, counts = build_pretrain_datasets(cfg, teacher, image_size)
    say(f"stage {cfg.run.stage}: {len(train_ds)} training pairs, "
        f"{len(val_ds) if val_ds is not None else 0} validation pairs; teacher "
        f"{teacher.name if teacher is not None else 'none (hard labels)'}")
    if skipped.count:
        say(skipped.summary(limit=50))
        if _is_global_zero():
            with (out / SKIPPED).open("w", encoding="utf-8") as f:
                for s in skipped:
                    f.write(json.dumps({"path": s.path, "record": s.record, "kind": s.kind, "reason": s.reason}) + "\n")
    if len(train_ds) < cfg.run.batch_size:
        raise ConfigError(f"{len(train_ds)} training pairs are fewer than run.batch_size={cfg.run.batch_size}")
    write_run_info(out, cfg, {"stage": cfg.run.stage, "teacher": teacher.name if teacher else None,
                              "corpora": counts, "skipped": _skip_summary(skipped)})

    model = _build_model(cfg, say)
    if count_devices(cfg.run) > 1:  # equal caption shapes on every process without a per-step all-reduce
        model.fixed_caption_length = cfg.data.max_caption_tokens
    collate = PretrainCollate(model.tokenizer, cfg.data.max_caption_tokens,
                              teacher.caption_tokenizer() if teacher is not None else None)
    nw = cfg.data.num_workers
    loader_kw = {"collate_fn": collate, "num_workers": nw, "persistent_workers": nw > 0}
    # order and augmentations are functions of (seed, epoch, position): a resumed run sees the same batches
    sampler = EpochSampler(train_ds, cfg.run.seed)
    train_loader = DataLoader(KeyedItems(train_ds, cfg.run.seed), batch_size=cfg.run.batch_size, sampler=sampler,
                              drop_last=True, generator=torch.Generator().manual_seed(cfg.run.seed), **loader_kw)
    val_loader = None  # its own generator: creating its iterator leaves the global torch RNG alone
    if val_ds is not None:
        val_loader = DataLoader(val_ds, batch_size=cfg.run.eval_batch_size, generator=torch.Generator(), **loader_kw)
    module = PretrainModule(model, cfg.run, teacher)
    has_val = val_loader is not None
    ckdir = out / "checkpoints"
    ckpt = FolderModelCheckpoint(
        dirpath=ckdir, monitor="val/recall_mean" if has_val else None, mode="max",
        save_top_k=cfg.run.save_top_k if has_val else 0,
        filename="epoch{epoch:03d}-recall{val/recall_mean:.4f}" if has_val else "epoch{epoch:03d}",
        auto_insert_metric_name=False,
    )
    validated = _ValidatedStep()
    resuming = last is not None
    trainer = L.Trainer(
        default_root_dir=out, max_epochs=cfg.run.max_epochs, max_steps=cfg.run.max_steps,
        accelerator=cfg.run.accelerator, devices=cfg.run.devices, strategy=cfg.run.strategy,
        precision=cfg.run.precision, accumulate_grad_batches=cfg.run.accumulate_grad_batches,
        gradient_clip_val=cfg.run.gradient_clip_val,
        callbacks=[ResumeState(sampler, cfg.run.batch_size), validated, *callbacks, ckpt,
                   LastCheckpoint(ckdir, cfg.run.checkpoint_every_n_steps), *progress_bar(cfg.run)],
        plugins=[AtomicCheckpointIO(module)],
        logger=[CSVLogger(out, name="logs", version=csv_log_version(out, resuming)),
                TensorBoardLogger(out, name="tensorboard", version="")],
        log_every_n_steps=cfg.run.log_every_n_steps, enable_progress_bar=cfg.run.progress_bar,
        check_val_every_n_epoch=cfg.run.val_every_n_epochs if cfg.run.val_check_interval is None else None,
        val_check_interval=cfg.run.val_check_interval, num_sanity_val_steps=0,
        limit_val_batches=1.0 if has_val else 0, enable_model_summary=False,
    )
    initial: dict[str, float] = {}
    if has_val:
        initial_file = out / INITIAL
        if resuming and initial_file.is_file():
            initial = json.loads(initial_file.read_text(encoding="utf-8"))
        else:
            initial = _val_metrics(trainer.validate(module, val_loader, verbose=False))
            if trainer.is_global_zero:
                atomic_write_text(initial_file, json.dumps(initial, indent=1))
        say(f"retrieval before training: {_fmt(initial)}")

    fit_start = time.time()
    with resumable_fit(), warnings.catch_warnings():  # frozen encoders are in eval mode on purpose (stage >= 1)
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resuming else None, weights_only=True)
    fit_seconds = time.time() - fit_start
    if trainer.is_global_zero:
        prune_checkpoints(ckdir, set(ckpt.best_k_models))
    selected = str(checked_checkpoint(ckpt.best_model_path, ckdir)) if ckpt.best_model_path else ""
    final: dict[str, float] = {}
    if has_val and validated.step != trainer.global_step:
        # the last epochs were not validated (run.val_every_n_epochs does not divide them): score the
        # final weights and keep them unless a validated checkpoint retrieves better
        final = _val_metrics(trainer.validate(module, val_loader, verbose=False))
        best = ckpt.best_model_score
        if ckpt.best_model_path and best is not None and float(best) > final["recall_mean"]:
            final = _val_metrics(trainer.validate(module, val_loader, ckpt_path=selected, verbose=False))
        else:
            selected = f"final weights (step {trainer.global_step})"
    elif has_val and selected:
        final = _val_metrics(trainer.validate(module, val_loader, ckpt_path=selected, verbose=False,
                                              weights_only=True))
    else:  # no validation: the final weights, already in the module
        selected = f"final weights (step {trainer.global_step})"
    if not trainer.is_global_zero:
        return {}
    model = module.model.cpu()
    model_dir = write_model_folder(out / "model", lambda d: model.save(
        d, extra={"selected_checkpoint": selected, "retrieval": final}))
    summary: dict[str, Any] = {
        "output_dir": str(out), "model_dir": str(model_dir), "stage": cfg.run.stage,
        "selected_checkpoint": selected, "initial": initial, "final": final,
        "untrained_recall_at_1": {k: initial[k] for k in ("i2t_r1", "t2i_r1") if k in initial},
        "final_recall_at_1": {k: final[k] for k in ("i2t_r1", "t2i_r1") if k in final},
        "losses": [n for n in ("itgc", "imvc", "utgc", "wpa", "itm") if model.uses(n)],
        "teacher": teacher.name if teacher is not None else None,
        "temperatures": model.temperatures(),
        "corpora": counts, "skipped": _skip_summary(skipped),
        "global_steps": trainer.global_step, "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    say(f"retrieval after training ({Path(selected).name if selected else 'final weights'}): {_fmt(final)}")
    say(f"model written to {model_dir}; summary in {out / 'summary.json'}")
    return summary


class _ValidatedStep(Callback):
    """Remembers the global step of the last validation, to tell whether the final weights were scored."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.step = trainer.global_step


def _fmt(metrics: dict[str, float]) -> str:
    keys = [k for k in metrics if k.startswith(("i2t", "t2i")) or k == "recall_mean"]
    return ", ".join(f"{k} {100 * metrics[k]:.1f}" for k in keys) or "n/a"


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable report of :func:`run_pretrain`'s summary."""
    lines = [f"stage {summary.get('stage')} pre-training done in {summary.get('fit_seconds')} s "
             f"({summary.get('global_steps')} steps); losses: {', '.join(summary.get('losses', []))}"]
    ini, fin = summary.get("initial") or {}, summary.get("final") or {}
    if fin:
        lines.append(f"{'retrieval':<12}{'before':>8}{'after':>8}")
        for k in fin:
            if k.startswith(("i2t", "t2i")) or k == "recall_mean":
                lines.append(f"{k:<12}{100 * ini.get(k, float('nan')):>8.1f}{100 * fin[k]:>8.1f}")
    sk = summary.get("skipped") or {}
    if sk.get("count"):
        lines.append(f"skipped {sk['count']} bad row(s): {sk.get('by_kind')}")
    lines.append(f"model: {summary.get('model_dir')}")
    return "\n".join(lines)
