"""Fine-tuning diagnosis: a plain training loop (images cached in memory) that prints validation
accuracy per question type and the most frequent predictions every N steps.

Same model, optimiser groups and schedule as ``amif finetune``, without Lightning, checkpoints or
test evaluation, so that settings can be compared quickly (docs/demo.md, "How the demo got here").

    python benchmarks/diagnose_finetune.py --data /tmp/demo/data --steps 400 --every 100
    python benchmarks/diagnose_finetune.py --data /tmp/demo/data model.decoder.cross_attention_init=bert
    python benchmarks/diagnose_finetune.py --data /tmp/demo/data data.blank_images=true
    python benchmarks/diagnose_finetune.py --data /tmp/demo/data model.fusion.attention_init=bert
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from amif.answers import exact_match, normalize_answer
from amif.models.vqa import AMiFVQA
from amif_train.config import load_config
from amif_train.finetune import build_datasets
from amif_train.optim import adamw, param_groups, warmup_cosine
from amif_train.vqa_module import pretrained_prefixes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_image_encoder import augment  # noqa: E402

LESION = ("presence", "count", "position", "size")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "finetune.yaml"


def cache(ds) -> tuple[torch.Tensor, list[str], list[str], list[str], list[str]]:
    items = [ds[i] for i in range(len(ds))]
    return (torch.stack([it["pixel_values"] for it in items]), [it["question"] for it in items],
            [it["answer"] for it in items], [it["question_type"] for it in items],
            [(it["answer_type"] or "").upper() for it in items])


def evaluate(model: AMiFVQA, val, batch: int = 64) -> tuple[dict[str, int], list[tuple[str, int]]]:
    model.eval()
    hits, n, preds = Counter(), Counter(), Counter()
    with torch.no_grad():
        for j in range(0, len(val[1]), batch):
            q, qm = model.tokenize_questions(val[1][j:j + batch])
            idx = model.rank(val[0][j:j + batch], q, qm).indices[:, 0].tolist()
            for i, k in enumerate(idx):
                pred, qt = model.answer_candidates[k], val[3][j + i]
                ok = exact_match(pred, val[2][j + i])
                at = val[4][j + i]
                for key in (qt, "ALL", at, f"{qt}/{at}") + (("LESION",) if qt in LESION else ()):
                    hits[key] += ok
                    n[key] += 1
                preds[pred] += 1
    model.train()
    return {k: round(100 * hits[k] / n[k]) for k in sorted(n)}, preds.most_common(3)


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
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config, [f"data.root={a.data}", *a.overrides])
    torch.manual_seed(cfg.run.seed)
    d = build_datasets(cfg, cfg.model.image_encoder.image_size)
    model = AMiFVQA(cfg.model, d["lists"].candidates, d["lists"].vocabulary)
    if cfg.run.init_from:
        model.load_encoder_weights(cfg.run.init_from)
    if a.image_encoder_state:
        model.image_encoder.load_state_dict(torch.load(a.image_encoder_state))
    if a.freeze_image_encoder or cfg.run.freeze_image_encoder:
        model.freeze_image_encoder()
    if cfg.run.freeze_text_encoder:
        model.freeze_text_encoder()
    if cfg.run.cache_frozen_features:
        model.cache_frozen_features()
    train_ds = d["datasets"]["train"]
    train = cache(train_ds) if not a.no_cache else (None, train_ds.questions,
                                                        [r.answer for r in train_ds.records], None)
    val = cache(d["datasets"]["val"])
    if a.train_types:
        if a.no_cache:
            raise SystemExit("--train-types needs the cached training images (no --no-cache)")
        keep = [i for i, t in enumerate(train[3]) if t in set(a.train_types.split(","))]
        train = (train[0][keep], *([col[i] for i in keep] for col in train[1:]))
        print(f"training on {len(keep)} questions of types {a.train_types}")
    groups = param_groups(model, cfg.run.lr, cfg.run.weight_decay, cfg.run.lr_new_modules,
                          pretrained_prefixes=pretrained_prefixes(model, cfg.run))
    opt = adamw(groups, cfg.run.lr, cfg.run.betas)
    sched = warmup_cosine(opt, a.steps, cfg.run.warmup_fraction, cfg.run.min_lr)
    b, n = cfg.run.batch_size, len(train[1])
    g = torch.Generator().manual_seed(cfg.run.seed)
    step, losses, t0 = 0, [], time.time()
    model.train()
    while step < a.steps:
        perm = torch.randperm(n, generator=g).tolist()
        for j in range(0, n - b + 1, b):
            ix = perm[j:j + b]
            q, qm = model.tokenize_questions([train[1][i] for i in ix])
            ans, am = model.tokenize_answers([normalize_answer(train[2][i]) for i in ix])
            pixels = (torch.stack([train_ds[i]["pixel_values"] for i in ix]) if a.no_cache
                      else train[0][ix])
            if a.shift_augment:
                pixels = augment(pixels, flips=False)
            loss = model(pixels, q, qm, ans, am)
            opt.zero_grad()
            loss.backward()
            if cfg.run.gradient_clip_val:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.run.gradient_clip_val)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if step % a.every == 0 or step == a.steps:
                t = time.time() - t0
                acc, top = evaluate(model, val)
                print(f"step {step} loss {sum(losses[-a.every:]) / len(losses[-a.every:]):.3f} ({t:.0f} s) "
                      f"val {acc} most frequent {top}", flush=True)
            if step >= a.steps:
                break


if __name__ == "__main__":
    main()
