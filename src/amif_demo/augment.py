"""A count-preserving augmentation of image batches for the demo's diagnosis scripts
(``benchmarks/probe_image_encoder.py --augment``, ``benchmarks/diagnose_finetune.py --shift-augment``):
lesions may move but none is cut off or added, so count and presence labels stay true."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["augment"]


def augment(x: torch.Tensor, shift: int = 4, jitter: float = 0.2, flips: bool = True) -> torch.Tensor:
    """Count-preserving augmentation: shift by up to ``shift`` px (background padding), random
    horizontal / vertical flips (``flips``), brightness and contrast jitter (flips change left/right)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, value=float(x.min()))
    offs = torch.randint(0, 2 * shift + 1, (b, 2)).tolist()
    x = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offs)])
    for dim in (-1, -2) if flips else ():
        flip = torch.rand(b) < 0.5
        x[flip] = x[flip].flip(dim)
    scale = 1 + jitter * (2 * torch.rand(b, 1, 1, 1) - 1)
    return x * scale + jitter * (2 * torch.rand(b, 1, 1, 1) - 1)
