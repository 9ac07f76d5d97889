"""Speed ratios measured in one run (no absolute timings are claimed):

1. answer ranking: amif's batched rank (first-token top-k, then one batched pass over B*k sequences)
   against scoring every candidate with its own decoder pass, as a naive implementation would;
2. optimizer step: fused AdamW (used by amif) against the default AdamW, on the tiny model's parameters;
3. question-only training step (demo config): B blank images against the one shared blank image that
   ``collate_vqa`` now passes (same loss and gradients, tests/amif/models/test_training_aids.py);
4. the demo's conv stem (64 px, forward + backward on 2B images, as in a two-view pre-training step):
   contiguous (NCHW) against channels-last (NHWC) tensors, the layout ``ConvStem`` now uses; and its
   blocks as conv -> BatchNorm -> ReLU -> max-pool (the stem before) against conv -> max-pool ->
   BatchNorm -> ReLU (``ConvStem`` now);
5. a fine-tuning step of the demo model with both encoders frozen: encoders run every step against
   their features taken from the cache (``run.cache_frozen_features``; same loss, tested).

Run: .venv/bin/python benchmarks/bench_speed.py [--candidates 200] [--batch 16]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch import nn

from amif.models.image_encoder import ImageEncoder
from amif.models.vqa import AMiFVQA
from amif_train.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def timeit(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "tiny.yaml").model
    cands = [f"answer {i}" for i in range(args.candidates)]
    model = AMiFVQA(cfg, cands, ["answer"] + [str(i) for i in range(50)]).eval()
    size = cfg.image_encoder.image_size
    px = torch.randn(args.batch, 3, size, size)
    q, qm = model.tokenize_questions(["what is the answer to this question?"] * args.batch)

    @torch.no_grad()
    def naive():
        context, cmask = model.fuse(px, q, qm)
        scores = []
        for c in cands:
            ids, mask = model.tokenize_answers([c] * args.batch)
            scores.append(model.decoder.sequence_log_likelihood(ids, mask, context, cmask))
        return torch.stack(scores, 1).argmax(1)

    batched_k = timeit(lambda: model.rank(px, q, qm, k=32))
    batched_all = timeit(lambda: model.rank(px, q, qm, k=len(cands)))
    loop_all = timeit(naive, repeat=1)

    model.train()
    a, am = model.tokenize_answers(["answer 1"] * args.batch)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = model(px, q, qm, a, am)
    loss.backward()  # every parameter now holds a gradient
    opts = {"default": torch.optim.AdamW(params, lr=1e-5), "fused": torch.optim.AdamW(params, lr=1e-5, fused=True)}
    best = {"default": float("inf"), "fused": float("inf")}
    for _ in range(3):  # interleaved, so both see the same machine load
        for name, opt in opts.items():
            best[name] = min(best[name], timeit(opt.step, repeat=1))
    default_t, fused_t = best["default"], best["fused"]
    copies_t, shared_t = blank_step_times(args.batch)
    nchw_t, nhwc_t = stem_layout_times(2 * args.batch)
    pool_last_t, pool_first_t = stem_order_times(2 * args.batch)
    uncached_t, cached_t = cached_step_times(args.batch)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; tiny config, batch {args.batch}, {args.candidates} candidates")
    print(f"ranking, per-candidate loop over all candidates / batched rank (k=all): {loop_all / batched_all:.1f}x")
    print(f"ranking, per-candidate loop over all candidates / batched rank (k=32):  {loop_all / batched_k:.1f}x")
    print(f"optimizer step ({sum(p.numel() for p in params) / 1e6:.1f} M parameters), default AdamW / fused AdamW: "
          f"{default_t / fused_t:.2f}x")
    print(f"question-only training step (demo config, batch {args.batch}), {args.batch} blank images / one shared "
          f"blank image: {copies_t / shared_t:.2f}x")
    print(f"conv stem forward + backward (demo config, {2 * args.batch} images), NCHW / channels-last: "
          f"{nchw_t / nhwc_t:.2f}x")
    print(f"conv stem forward + backward ({2 * args.batch} images), pool last / pool first: "
          f"{pool_last_t / pool_first_t:.2f}x")
    print(f"fine-tuning step, both encoders frozen (demo config, batch {args.batch}), encoders every step / "
          f"cached features: {uncached_t / cached_t:.2f}x")


def stem_layout_times(n: int) -> tuple[float, float]:
    """Seconds per forward + backward of the demo's conv stem: contiguous, then channels-last."""
    cfg = load_config(ROOT / "configs" / "demo" / "finetune.yaml").model.image_encoder
    stem = ImageEncoder(cfg).model.embeddings.patch_embedding
    size = cfg.image_size
    x = torch.randn(n, 3, size, size)
    stem.to(memory_format=torch.contiguous_format)  # its layers on NCHW weights and inputs
    nchw = timeit(lambda: stem.proj(stem.blocks(x)).sum().backward())
    stem.to(memory_format=torch.channels_last)  # as built: ConvStem.forward converts its input
    nhwc = timeit(lambda: stem(x).sum().backward())
    return nchw, nhwc


def stem_order_times(n: int) -> tuple[float, float]:
    """Best-of-3 forward + backward times (interleaved) of the demo's conv stem with its blocks as
    conv -> BN -> ReLU -> pool (the order before) and conv -> pool -> BN -> ReLU (``ConvStem``)."""
    cfg = load_config(ROOT / "configs" / "demo" / "finetune.yaml").model.image_encoder
    stem = ImageEncoder(cfg).model.embeddings.patch_embedding
    mods = list(stem.blocks)
    old = []
    for i in range(0, len(mods), 4):
        conv, pool, bn, relu = mods[i:i + 4]
        old += [conv, bn, relu, pool]
    pool_last = nn.Sequential(*old)
    x = torch.randn(n, 3, cfg.image_size, cfg.image_size).contiguous(memory_format=torch.channels_last)
    runs = {"last": lambda: stem.proj(pool_last(x)).sum().backward(), "first": lambda: stem(x).sum().backward()}
    best = {k: float("inf") for k in runs}
    for _ in range(3):
        for name, fn in runs.items():
            best[name] = min(best[name], timeit(fn, repeat=1))
    return best["last"], best["first"]


def cached_step_times(batch: int) -> tuple[float, float]:
    """Best-of-3 training step times (interleaved) of the demo model with frozen encoders, without and
    with the feature cache (filled by the warm-up call)."""
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "demo" / "finetune.yaml").model
    models = {}
    for name in ("encoders", "cached"):
        model = AMiFVQA(cfg, ["yes", "no", "2"], ["yes", "no", "2"])
        model.freeze_image_encoder()
        model.freeze_text_encoder()
        model.cache_frozen_features(name == "cached")
        models[name] = model.train()
    size = cfg.image_encoder.image_size
    px = torch.randn(batch, 3, size, size)
    words = ["is there a lesion", "how many lesions are in the left upper part of the brain", "what modality is this"]
    q, qm = models["cached"].tokenize_questions([words[i % 3] for i in range(batch)])
    a, am = models["cached"].tokenize_answers(["yes"] * batch)

    def step(model: AMiFVQA) -> None:
        model.zero_grad()
        model(px, q, qm, a, am).backward()

    best = {k: float("inf") for k in models}
    for _ in range(3):
        for name, model in models.items():
            best[name] = min(best[name], timeit(lambda m=model: step(m), repeat=1))
    return best["encoders"], best["cached"]


def blank_step_times(batch: int) -> tuple[float, float]:
    """Best-of-3 forward + backward times (interleaved) of the demo model on B blank copies vs one."""
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "demo" / "finetune.yaml").model
    model = AMiFVQA(cfg, ["yes", "no", "2"], ["yes", "no", "2"]).train()
    size = cfg.image_encoder.image_size
    q, qm = model.tokenize_questions(["is there a lesion in the left upper part of the brain?"] * batch)
    a, am = model.tokenize_answers(["yes"] * batch)

    def step(px: torch.Tensor):
        model.zero_grad()
        model(px, q, qm, a, am).backward()

    inputs = {"copies": torch.zeros(batch, 3, size, size), "shared": torch.zeros(1, 3, size, size)}
    best = {k: float("inf") for k in inputs}
    for _ in range(3):
        for name, px in inputs.items():
            best[name] = min(best[name], timeit(lambda px=px: step(px), repeat=1))
    return best["copies"], best["shared"]


if __name__ == "__main__":
    main()
