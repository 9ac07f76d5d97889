"""GPU check at the paper's sizes: step times, peak memory, ranking throughput and MFU in one command.

    python benchmarks/gpu_check.py --out runs/gpu_check           # one GPU, bf16-mixed, ~3-5 minutes
    python benchmarks/gpu_check.py --tiny --device cpu --out DIR  # a few seconds; the test suite runs this

Random weights in the released formats (``amif.testing.paper_size``): an OpenAI-layout ViT-B/16, a BERT-base folder
and a BiomedCLIP-sized CLIP teacher. Measured, each with its peak GPU memory:

* a stage-0 pre-training step at the paper's negative pool (256 pairs on one device);
* a stage-1 step (encoders frozen, optimal-transport word-patch alignment and ITM with hard negatives);
* a fine-tuning step at batch 24;
* ranking throughput in questions/s at k = 32;
* model FLOPs utilisation: FLOPs of one step from ``torch.utils.flop_counter`` over the median step time,
  against a bf16 matmul peak measured in the same run.

A training step is what the Lightning modules do per batch (teacher targets, losses, backward, the
app's AdamW parameter groups, temperature clamp), called directly so that it can be timed alone. On CUDA the timed steps run under
``torch.cuda.set_sync_debug_mode("warn")``, and the number of host synchronisations they report is
recorded. Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from amif.testing.paper_size import (
    candidate_answers,
    paper_overrides,
    pretrain_batch,
    vqa_batch,
    write_paper_files,
)
from amif_train.config import PretrainConfig, load_config
from amif_train.optim import adamw, param_groups
from amif_train.vqa_module import pretrained_prefixes

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """Measured dense matmul throughput (FLOP/s) of ``n x n`` by ``n x n`` products."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention) by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def sync_warnings(device: torch.device, record: list):
    """Collect CUDA's host-synchronisation warnings raised inside the block."""
    if device.type != "cuda":
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    record.extend(str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower())


def measure(name: str, step: Callable[[], Any], flop_step: Callable[[], Any], device: torch.device,
            steps: int, warmup: int, items: int) -> dict[str, Any]:
    """Median wall time of ``step`` over ``steps`` calls after ``warmup``, peak memory and FLOPs of
    ``flop_step`` (all that runs: with activation checkpointing the recomputed forward counts too)."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, syncs = [], []
    with sync_warnings(device, syncs):
        for _ in range(steps):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    flops = count_flops(flop_step)
    median = statistics.median(times)
    return {"name": name, "items": items, "step_s": median, "step_s_all": times, "flops": flops,
            "flops_per_s": flops / median, "items_per_s": items / median, "peak_gib": peak,
            "host_syncs_per_step": len(syncs) / steps if device.type == "cuda" else None,
            "host_sync_examples": sorted(set(syncs))[:5]}


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def training_step(model: torch.nn.Module, loss: Callable[[], torch.Tensor], run: Any, pretrained: tuple[str, ...],
                  after: Callable[[], Any] = lambda: None) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(step, forward_backward)``: a full optimisation step, and its forward + backward alone.

    The optimiser is the one the Lightning modules build for ``run`` (``amif_train.optim``: AdamW over
    the trainable parameters, ``pretrained`` prefixes at ``run.lr``, the others at ``run.lr_new_modules``).
    """
    groups = param_groups(model, run.lr, run.weight_decay, run.lr_new_modules, pretrained_prefixes=pretrained)
    opt = adamw(groups, run.lr, run.betas)

    def forward_backward() -> None:
        loss().backward()

    def step() -> None:
        forward_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        after()

    return step, forward_backward


def pretrain_phases(files, device, autocast, batch_size: int, steps: int, warmup: int,
                    caption_words: int) -> list[dict[str, Any]]:
    from amif.models.coattention import enable_activation_checkpointing
    from amif.models.pretrain import AMiFPretrainModel
    from amif.teachers import load_teacher

    cfg = load_config(PAPER / "pretrain_stage0.yaml", paper_overrides(files, pretraining=True), cls=PretrainConfig)
    teacher = load_teacher(cfg.losses.teacher, device)
    torch.manual_seed(0)
    model = AMiFPretrainModel(cfg.model, cfg.losses, stage=0).to(device)
    if cfg.run.activation_checkpointing:  # as PretrainModule does with this config
        enable_activation_checkpointing(model)
    batch = _to(pretrain_batch(model, teacher, batch_size, caption_words=caption_words), device)

    def loss() -> torch.Tensor:
        with autocast():
            losses = model(batch, teacher.teacher_embeddings(batch), teacher_scale=teacher.logit_scale)
            return torch.stack([v.float() for v in losses.values()]).sum()

    out = []
    for stage, name in ((0, "stage-0 pre-training step"), (1, "stage-1 pre-training step (OT + ITM)")):
        model.set_stage(stage)
        model.train()
        step, forward_backward = training_step(model, loss, cfg.run, ("image_encoder.", "text_encoder."),
                                               after=model.clamp_temperatures)
        out.append(measure(name, step, forward_backward, device, steps, warmup, batch_size))
        out[-1]["activation_checkpointing"] = cfg.run.activation_checkpointing
        model.zero_grad(set_to_none=True)
    return out


def finetune_phases(files, device, autocast, batch_size: int, rank_batch: int, n_candidates: int,
                    steps: int, warmup: int) -> list[dict[str, Any]]:
    from amif.models.coattention import enable_activation_checkpointing
    from amif.models.vqa import AMiFVQA

    cfg = load_config(PAPER / "finetune_slake.yaml", paper_overrides(files, pretraining=False))
    torch.manual_seed(0)
    cands = candidate_answers(n_candidates)
    model = AMiFVQA(cfg.model, cands, sorted({w for c in cands for w in c.split()})).to(device)
    if cfg.run.activation_checkpointing:
        enable_activation_checkpointing(model)
    params = sum(p.numel() for p in model.parameters())
    batch = _to(vqa_batch(model, batch_size), device)
    model.train()

    def loss() -> torch.Tensor:
        with autocast():
            return model(**batch)

    step, forward_backward = training_step(model, loss, cfg.run, pretrained_prefixes(model, cfg.run))
    out = [measure(f"fine-tuning step (batch {batch_size})", step, forward_backward, device, steps, warmup,
                   batch_size)]
    model.zero_grad(set_to_none=True)
    model.eval()
    rb = _to(vqa_batch(model, rank_batch, seed=1), device)

    @torch.no_grad()
    def rank() -> None:
        with autocast():
            model.rank(rb["pixel_values"], rb["question_ids"], rb["question_mask"], k=32)

    out.append(measure(f"ranking at k = 32 ({rank_batch} questions, {len(cands)} candidates)", rank, rank,
                       device, steps, warmup, rank_batch))
    out[-1]["vqa_parameters"] = params
    return out


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"GPU check ({'tiny' if report['tiny'] else 'paper size'}) on {env['device_name']}, "
             f"{report['precision']}, torch {env['torch']}; matmul peak measured "
             f"{report['matmul_peak_tflops']:.1f} TFLOP/s ({report['matmul_dtype']}).", "",
             "| measurement | items | step (s) | items/s | GFLOP per step | MFU | peak memory (GiB) | host syncs/step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        syncs = "-" if r["host_syncs_per_step"] is None else f"{r['host_syncs_per_step']:g}"
        lines.append(f"| {r['name']} | {r['items']} | {r['step_s']:.3f} | {r['items_per_s']:.1f} | "
                     f"{r['flops'] / 1e9:.1f} | {100 * r['mfu']:.1f} % | {peak} | {syncs} |")
    lines += ["", f"VQA model parameters: {report['vqa_parameters'] / 1e6:.1f} M; total wall time "
              f"{report['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = args.precision == "bf16-mixed"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    tiny = args.tiny
    sizes = dict(pretrain=4, finetune=4, rank=4, candidates=40) if tiny else dict(
        pretrain=256, finetune=24, rank=64, candidates=1000)
    mm_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, mm_dtype, 256 if tiny else 8192, 5 if tiny else 50)
    with tempfile.TemporaryDirectory(prefix="amif-gpu-check-") as tmp:
        files = write_paper_files(Path(tmp), tiny=tiny)
        results = pretrain_phases(files, device, autocast, sizes["pretrain"], args.steps, args.warmup,
                                  caption_words=20 if tiny else 118)  # 118 words: the 120-token cap
        results += finetune_phases(files, device, autocast, sizes["finetune"], sizes["rank"], sizes["candidates"],
                                   args.steps, args.warmup)
    for r in results:
        r["mfu"] = r["flops_per_s"] / peak
    params = results[-1].pop("vqa_parameters")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report = {"tiny": tiny, "device": str(device), "precision": args.precision, "matmul_dtype": str(mm_dtype),
              "matmul_peak_tflops": peak / 1e12, "vqa_parameters": params, "results": results,
              "environment": {"torch": torch.__version__, "device_name": name, "python": platform.python_version()},
              "wall_s": time.perf_counter() - started}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "gpu_check.md").write_text(to_markdown(report), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny model and batches (seconds on a CPU)")
    p.add_argument("--device", help="default: cuda when available")
    p.add_argument("--precision", choices=("bf16-mixed", "32-true"), default=None,
                   help="default: bf16-mixed on CUDA, 32-true on the CPU")
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="runs/gpu_check")
    args = p.parse_args(argv)
    if args.precision is None:
        cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        args.precision = "bf16-mixed" if cuda else "32-true"
    report = run(args)
    print(to_markdown(report), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
