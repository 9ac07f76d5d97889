"""Answer ranking: amif's path against the published code's way of computing the same ranking, in
questions per second measured in one run (ratios only; absolute times depend on the machine's load).
Times are the process's CPU time (``time.process_time``) with ``--threads`` threads (default 1), which
other jobs on a shared machine disturb far less than wall time; ``--clock wall`` times wall clock.

- ``official``: ``AMiFVQA.rank(..., reference=True)``: each question's image encoded for it, the GCA
  vocabulary branch recomputed, the fused context repeated k times (its cross-attention keys and
  values projected once per candidate), candidates padded to the longest of the whole list, the full
  log-softmax of every position.
- ``amif``: ``AMiFVQA.rank``: keys and values once per question, candidates trimmed to the longest
  selected one, one logsumexp per position, the GCA prior cached, each distinct image encoded once.
  Its times are those of an evaluation after its first batch: the prior cache is filled by then.

Measured three ways: the whole call with one image per question; the decoding part alone (from the
same fused features, ``rank_fused``); the whole call on a batch where several questions share each
image (``--questions-per-image``, as in VQA-RAD and SLAKE). Every comparison asserts that both paths
rank the same answers with the same scores (within ``--atol``).

``--size paper``: ViT-B/16 at 288 px (11 blocks) + BERT-base (text encoder and 12-layer decoder with
cross-attention from layer 6), random weights; ~440 M parameters, about 2 GB of memory at batch 4.
``--size tiny``: configs/tiny.yaml.

Run: .venv/bin/python benchmarks/bench_rank.py --size paper --batch 4 [--candidates 450 --vocabulary 852]
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from pathlib import Path

import torch

from amif.models.text_encoder import load_tokenizer
from amif.models.vqa import AMiFVQA
from amif_train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAPER_RANDOM = [
    "model.image_encoder.pretrained=null", "model.text_encoder.path=minilm",
    "model.text_encoder.pretrained=false", "model.decoder.init_from_text_encoder=false",
]


def build(size: str, n_candidates: int, n_vocabulary: int, seed: int = 0) -> AMiFVQA:
    """A model with random weights and made-up answers of 1-5 words drawn from the tokenizer's words."""
    torch.manual_seed(seed)
    tokenizer = load_tokenizer("minilm")  # the uncased BERT word pieces (30,522, as BERT-base)
    rng = random.Random(seed)
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2)
    vocabulary = rng.sample(words, n_vocabulary)
    candidates = list(dict.fromkeys(
        " ".join(rng.sample(vocabulary, rng.choice([1, 1, 1, 2, 2, 3, 4, 5]))) for _ in range(3 * n_candidates)
    ))[:n_candidates]
    if size == "paper":
        from transformers import BertConfig

        cfg = load_config(ROOT / "configs" / "paper" / "finetune_base.yaml", PAPER_RANDOM).model
        return AMiFVQA(cfg, candidates, vocabulary, tokenizer=tokenizer, load_pretrained=False,
                       text_config=BertConfig(vocab_size=tokenizer.vocab_size)).eval()
    cfg = load_config(ROOT / "configs" / "tiny.yaml").model
    return AMiFVQA(cfg, candidates, vocabulary, tokenizer=tokenizer).eval()


def best_of(fns: dict, repeat: int, clock) -> dict[str, float]:
    """Best time of each function over ``repeat`` interleaved rounds (after one warm-up each)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t = clock()
            fn()
            best[name] = min(best[name], clock() - t)
    return best


def check_same(fast, ref, atol: float) -> float:
    diff = (fast.log_likelihood - ref.log_likelihood).abs().max().item()
    assert torch.equal(fast.indices, ref.indices), "the two paths rank different answers"
    assert diff <= atol, f"scores differ by {diff:.2e} (> {atol:.0e})"
    return diff


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["paper", "tiny"], default="tiny")
    ap.add_argument("--batch", type=int, default=4, help="questions per call")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--candidates", type=int, default=450, help="answer candidates (VQA-RAD has ~450)")
    ap.add_argument("--vocabulary", type=int, default=852, help="words of the GCA prior")
    ap.add_argument("--questions-per-image", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--flops", action="store_true", help="also count each path's GFLOP (one more call each)")
    args = ap.parse_args()
    if args.batch % args.questions_per_image:
        ap.error("--batch must be a multiple of --questions-per-image")
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model = build(args.size, args.candidates, args.vocabulary)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    size = model.image_encoder.image_size
    torch.manual_seed(1)
    px = torch.randn(args.batch, 3, size, size)
    q, qm = model.tokenize_questions(["is there evidence of a lesion in the left lower lobe?"] * args.batch)
    shared = torch.arange(args.batch) // args.questions_per_image  # question i asks about image i // qpi
    k = args.k
    print(f"# bench_rank --size {args.size}: {n_params:.1f} M parameters, batch {args.batch}, k = {k}, "
          f"{len(model.answer_candidates)} candidates, prior {model.prior_ids.shape[1]} tokens, {size} px; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} time, {platform.machine()}")
    context, cmask = model.fuse(px, q, qm)
    cases = {
        "whole call, one image per question": {
            "official": lambda: model.rank(px, q, qm, k=k, reference=True),
            "amif": lambda: model.rank(px, q, qm, k=k)},
        "decoding part (from the fused features)": {
            "official": lambda: model.rank_fused(context, cmask, k=k, reference=True),
            "amif": lambda: model.rank_fused(context, cmask, k=k)},
        f"whole call, {args.questions_per_image} questions per image": {
            "official": lambda: model.rank(px, q, qm, k=k, image_index=shared, reference=True),
            "amif": lambda: model.rank(px, q, qm, k=k, image_index=shared)},
    }
    flops = " official GFLOP | amif GFLOP |" if args.flops else ""
    print(f"| case | official (questions/s) | amif (questions/s) | amif / official | max score difference |{flops}")
    print("|---|---:|---:|---:|---:|" + "---:|" * 2 * args.flops)
    for name, fns in cases.items():
        diff = check_same(fns["amif"](), fns["official"](), args.atol)
        t = best_of(fns, args.repeat, clock)
        qps = {n: args.batch / s for n, s in t.items()}
        row = f"| {name} | {qps['official']:.3f} | {qps['amif']:.3f} | {qps['amif'] / qps['official']:.2f}x | {diff:.1e} |"
        if args.flops:
            row += "".join(f" {count_gflop(fns[n]):.1f} |" for n in ("official", "amif"))
        print(row, flush=True)


def count_gflop(fn) -> float:
    """GFLOP of one call as ``torch.utils.flop_counter`` counts them (matrix products; attention run by
    a fused CPU kernel is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


if __name__ == "__main__":
    main()
