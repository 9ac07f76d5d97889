"""Token probe: does a trained image encoder keep *where* things are in its patch tokens?

Two linear probes on the frozen encoder's patch tokens of the demo caption images (trained on the
training split, scored on the test split):

1. each token's grid column from its features (is position in the tokens at all?);
2. whether the token's patch holds a lesion centre (class-balanced loss; recall and specificity).

Attention can only find a lesion's position if (2) is sharp. docs/demo.md reports what it found on the demo.

    python benchmarks/probe_tokens.py --data /tmp/demo/data \\
        --init /tmp/demo/runs/pretrain_stage0/model/model.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from amif.data.images import load_image
from amif.data.transforms import build_eval_transform
from amif.models.image_encoder import ImageEncoder
from amif_train.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "finetune.yaml"


def load(root: Path, split: str, size: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 3, size, size]`` and per-patch lesion-centre labels ``[N, grid * grid]``."""
    tf = build_eval_transform(size)
    images, labels = [], []
    for line in (root / f"captions_{split}.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        img = load_image(root / rec["image"])
        w, h = img.size
        label = torch.zeros(grid * grid)
        for lesion in rec["extra"].get("lesions") or []:
            cx, cy = lesion["center_px"]
            label[min(grid - 1, int(cy / h * grid)) * grid + min(grid - 1, int(cx / w * grid))] = 1
        images.append(tf(img))
        labels.append(label)
    return torch.stack(images), torch.stack(labels)


def linear_probe(a: torch.Tensor, ya: torch.Tensor, b: torch.Tensor, classes: int,
                 weight: torch.Tensor | None = None, steps: int = 300) -> torch.Tensor:
    """Predictions on ``b`` of a linear classifier trained on standardised ``a``."""
    mu, sd = a.mean(0), a.std(0) + 1e-5
    a, b = (a - mu) / sd, (b - mu) / sd
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, bias], lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(a @ w + bias, ya, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (b @ w + bias).argmax(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="demo dataset folder (amif data demo --out ...)")
    p.add_argument("--init", required=True, help="model.safetensors holding image_encoder.* weights")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = load_config(CONFIG).model.image_encoder
    enc = ImageEncoder(cfg)
    state = load_file(a.init)
    enc.load_state_dict({k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")})
    enc.eval()
    grid = cfg.image_size // cfg.patch_size
    root = Path(a.data)
    (xa, la), (xb, lb) = load(root, "train", cfg.image_size, grid), load(root, "test", cfg.image_size, grid)
    with torch.no_grad():
        ta, tb = enc(xa)[:, 1:].reshape(-1, enc.width), enc(xb)[:, 1:].reshape(-1, enc.width)
    col = torch.arange(grid * grid) % grid
    pred = linear_probe(ta, col.repeat(len(xa)), tb, grid)
    print(f"token column from its features: {(pred == col.repeat(len(xb))).float().mean():.2f} "
          f"(chance {1 / grid:.2f})")
    ya, yb = la.reshape(-1).long(), lb.reshape(-1).long()
    rate = ya.float().mean()
    pred = linear_probe(ta, ya, tb, 2, weight=torch.stack([torch.tensor(1.0), (1 - rate) / rate]))
    print(f"lesion-centre tokens: {yb.float().mean():.3f} of the test tokens; probe recall "
          f"{(pred[yb == 1] == 1).float().mean():.2f}, specificity {(pred[yb == 0] == 0).float().mean():.2f}")


if __name__ == "__main__":
    main()
