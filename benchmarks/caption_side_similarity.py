"""Does a demo pre-training model tell a lesion's side apart, in its captions and its images?

For the single-lesion captions of one split, each caption is edited in one attribute at a time
(left <-> right, anterior <-> posterior, the intensity term, one lesion -> two, lesion -> none). Printed
per edit:

- ``pooled cos``: cosine of the locked text encoder's pooled features of the caption and its edit
  (what the text projection receives);
- ``text cos``: the same after the model's text projection (the contrastive space);
- ``image prefers true``: share of images whose feature is closer to their own caption than to the
  edited one (50 % = the model cannot tell the two apart from the image).

Used for docs/demo.md, item 12.

    python benchmarks/caption_side_similarity.py --model /tmp/demo/runs/pretrain_stage0/model \\
        --data /tmp/demo/data --split val
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from amif.data.images import load_image
from amif.data.transforms import build_eval_transform
from amif.models.pretrain import AMiFPretrainModel


def _swap(text: str, a: str, b: str) -> str:
    return re.sub(rf"\b({a}|{b})\b", lambda m: b if m.group(0) == a else a, text)


EDITS = {
    "left <-> right": lambda c: _swap(c, "left", "right"),
    "anterior <-> posterior": lambda c: _swap(c, "anterior", "posterior"),
    "upper <-> lower": lambda c: _swap(c, "upper", "lower"),
    "hyper <-> hypo": lambda c: _swap(_swap(c, "hyperintense", "hypointense"), "hyperdense", "hypodense"),
    "one -> two lesions": lambda c: c.replace("a single", "two").replace(" lesion ", " lesions "),
    "lesion -> none": lambda c: re.sub(r" (showing|with) .*$|\. .*$", ". No focal lesion is seen.", c, count=1),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a pre-training model folder (runs/pretrain_stage0/model)")
    p.add_argument("--data", required=True, help="the demo dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = AMiFPretrainModel.load(a.model).eval()
    root = Path(a.data)
    recs = [json.loads(line) for line in (root / f"captions_{a.split}.jsonl").read_text(encoding="utf-8").splitlines()]
    recs = [r for r in recs if r["extra"].get("n_lesions") == 1]
    tf = build_eval_transform(model.cfg.image_encoder.image_size)
    caps = [r["caption"] for r in recs]

    def pooled_and_projected(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = model.tokenizer(texts, padding="longest", truncation=True, max_length=120, return_tensors="pt")
        tokens = model.text_encoder(enc["input_ids"], enc["attention_mask"])
        pooled = model.pool_text(tokens, enc["attention_mask"])
        return F.normalize(pooled, dim=-1), F.normalize(model.fusion.text_proj(pooled), dim=-1)

    with torch.no_grad():
        images = torch.stack([tf(load_image(root / r["image"])) for r in recs])
        img = model.image_features(images)
        pooled, text = pooled_and_projected(caps)
        print(f"{len(recs)} single-lesion {a.split} images")
        for name, edit in EDITS.items():
            alt = [edit(c) for c in caps]
            keep = [i for i, (c, e) in enumerate(zip(caps, alt)) if c != e]
            if not keep:
                continue
            p_alt, t_alt = pooled_and_projected([alt[i] for i in keep])
            pooled_cos = (pooled[keep] * p_alt).sum(-1).mean().item()
            text_cos = (text[keep] * t_alt).sum(-1).mean().item()
            prefers = ((img[keep] * text[keep]).sum(-1) > (img[keep] * t_alt).sum(-1)).float().mean().item()
            print(f"{name:24s} n {len(keep):4d}  pooled cos {pooled_cos:.4f}  text cos {text_cos:.4f}  "
                  f"image prefers true {100 * prefers:.1f} %")


if __name__ == "__main__":
    main()
