"""Does a stage-1 pre-training model's image-text matching head tell a caption from its side-swapped twin?

For every caption record of one split that has ``extra["negative_captions"]`` (the demo's twins: the
caption with the lesion's side on one axis exchanged), the ITM head scores the image with its own caption
and with each twin. Printed per axis of the exchanged words:

- ``prefers true``: share of (image, twin) pairs where the own caption gets the higher matching
  probability (50 % = the fusion cannot tell the sides apart);
- ``p(match) true / twin``: mean matching probability of the own caption and of the twin.

Used for docs/demo.md ("How the demo got here").

    python benchmarks/itm_side_preference.py --model /tmp/demo/runs/pretrain_stage1/model \\
        --data /tmp/demo/data --split val
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from amif.data.collate import tokenize
from amif.data.images import load_image
from amif.data.transforms import build_eval_transform
from amif.models.pretrain import AMiFPretrainModel

AXIS = {"left": "left/right", "right": "left/right", "upper": "upper/lower", "lower": "upper/lower",
        "anterior": "anterior/posterior", "posterior": "anterior/posterior"}


def _axis(caption: str, twin: str) -> str:
    """The axis of the first word that differs between a caption and its twin."""
    diff = [u for u, v in zip(caption.split(), twin.split()) if u != v]
    return AXIS.get(diff[0].strip(",."), "other") if diff else "other"


def match_probability(model: AMiFPretrainModel, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """ITM probability of "matching" ``[N]`` for image i with text i."""
    ids, mask = tokenize(model.tokenizer, texts, 120)
    text_in = model.fusion.text_proj(model.text_encoder(ids, mask))
    image_in = model.fusion.image_proj(model.image_encoder(images))
    x, y = model.fusion.fuse(text_in, mask, image_in, None)
    return model.itm_head(torch.cat([x[:, 0], y[:, 0]], dim=-1)).softmax(-1)[:, 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a stage-1 pre-training model folder")
    p.add_argument("--data", required=True, help="the demo dataset folder (captions with negative_captions)")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = AMiFPretrainModel.load(a.model).eval()
    root = Path(a.data)
    path = root / f"captions_{a.split}.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: no {path}")
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = [(r, t) for r in recs for t in r.get("extra", {}).get("negative_captions", [])]
    if not pairs:
        raise SystemExit(f"error: no record in {path} has negative_captions (build the demo data again)")
    tf = build_eval_transform(model.cfg.image_encoder.image_size)
    with torch.no_grad():
        images = torch.stack([tf(load_image(root / r["image"])) for r, _ in pairs])
        p_true = match_probability(model, images, [r["caption"] for r, _ in pairs])
        p_twin = match_probability(model, images, [t for _, t in pairs])
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (r, t) in enumerate(pairs):
        groups[_axis(r["caption"], t)].append(i)
        groups["all"].append(i)
    print(f"{len(pairs)} (image, twin) pairs from {len({r['id'] for r, _ in pairs})} {a.split} images")
    for name, idx in sorted(groups.items(), key=lambda kv: kv[0] != "all"):
        k = torch.tensor(idx)
        prefers = (p_true[k] > p_twin[k]).float().mean().item()
        print(f"{name:20s} n {len(idx):4d}  prefers true {100 * prefers:5.1f} %  "
              f"p(match) true {p_true[k].mean().item():.3f} / twin {p_twin[k].mean().item():.3f}")


if __name__ == "__main__":
    main()
