"""Image-only probe: how fast does an image encoder trained from scratch learn the demo's lesion count?

Trains an image encoder + linear head to predict the number of lesions (0-3) of each demo image
(from the caption records' ground truth) and prints validation count accuracy and presence accuracy
(count > 0) every 100 steps. Used to choose the demo's image encoder (docs/demo.md).

    python benchmarks/probe_image_encoder.py --data /tmp/demo/data --stem patch --steps 1500
    python benchmarks/probe_image_encoder.py --data /tmp/demo/data --stem conv --steps 800
    python benchmarks/probe_image_encoder.py --data /tmp/demo/data --cnn --steps 1500
    python benchmarks/probe_image_encoder.py --data /tmp/demo/data --stem conv --augment   # shifts, flips, jitter
    # linear probe of a trained encoder (frozen; e.g. the demo's stage-0 pre-training) vs a random one:
    python benchmarks/probe_image_encoder.py --data /tmp/demo/data --stem conv --frozen \
        --init /tmp/demo/runs/pretrain_stage0/model/model.safetensors
    python benchmarks/probe_image_encoder.py --data /tmp/demo/data --stem conv --frozen
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from amif.data.images import load_image
from amif.data.transforms import build_eval_transform
from amif.models.config import ImageEncoderConfig
from amif.models.image_encoder import ImageEncoder
from amif_demo.augment import augment


def load(root: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    tf = build_eval_transform(size)
    recs = [json.loads(line) for line in (root / f"captions_{split}.jsonl").read_text().splitlines() if line]
    recs = [r for r in recs if r["extra"].get("n_lesions") is not None]
    x = torch.stack([tf(load_image(root / r["image"])) for r in recs])
    return x, torch.tensor([r["extra"]["n_lesions"] for r in recs])


class SmallCNN(nn.Module):
    """Reference: four 3x3 conv + BatchNorm + ReLU + max-pool blocks, no transformer."""

    def __init__(self, width: int = 192):
        super().__init__()
        chans, layers = [3, 32, 64, 128, width], []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="demo dataset folder (amif data demo --out ...)")
    p.add_argument("--stem", default="patch", choices=["patch", "conv"])
    p.add_argument("--cnn", action="store_true", help="probe the reference CNN instead of the ViT")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", help="write the trained encoder's state dict here (torch.save)")
    p.add_argument("--augment", action="store_true", help="shift / flip / intensity-jitter the training images")
    p.add_argument("--no-flips", action="store_true", help="with --augment: shifts and jitter only")
    p.add_argument("--init", help="start the ViT from the image_encoder.* weights of this model.safetensors")
    p.add_argument("--frozen", action="store_true", help="train only the linear head (a linear probe)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    root = Path(a.data)
    tx, ty = load(root, "train", a.size)
    vx, vy = load(root, "val", a.size)
    print(f"train images {len(ty)}, val images {len(vy)}, val majority count "
          f"{(vy == vy.mode().values).float().mean():.2f}, val share with lesions {(vy > 0).float().mean():.2f}")
    if a.cnn:
        enc: nn.Module = SmallCNN()
    else:
        enc = ImageEncoder(ImageEncoderConfig(pretrained=None, image_size=a.size, patch_size=a.patch, hidden_size=192,
                                              num_layers=4, num_heads=3, intermediate_size=768, stem=a.stem,
                                              hidden_act="quick_gelu"))
        if a.init:
            prefix = "image_encoder."
            enc.load_state_dict({k[len(prefix):]: v for k, v in load_file(a.init).items() if k.startswith(prefix)})
    if a.frozen:
        enc.eval().requires_grad_(False)
    head = nn.Linear(192, 4)
    params = [q for q in list(enc.parameters()) + list(head.parameters()) if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    step, t0 = 0, time.time()
    while step < a.steps:
        perm = torch.randperm(len(ty), generator=g)
        for j in range(0, len(ty) - 31, 32):
            ix = perm[j:j + 32]
            x = augment(tx[ix], flips=not a.no_flips) if a.augment else tx[ix]
            loss = F.cross_entropy(head(enc(x).mean(1)), ty[ix])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0 or step == a.steps:
                enc.eval()
                with torch.no_grad():
                    pred = head(enc(vx).mean(1)).argmax(1)
                enc.train(not a.frozen)
                print(f"step {step} train loss {loss.item():.3f} val count {(pred == vy).float().mean():.2f} "
                      f"presence {((pred > 0) == (vy > 0)).float().mean():.2f} ({time.time() - t0:.0f} s)", flush=True)
            if step >= a.steps:
                break
    if a.save:
        torch.save(enc.state_dict(), a.save)


if __name__ == "__main__":
    main()
