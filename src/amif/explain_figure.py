"""Pictures of an :class:`amif.explain.Explanation`: the heatmap over the image, and a one-page PNG."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from amif.explain import Explanation
from amif.extras import require


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The patch heatmap bilinearly resized to ``size`` (width, height), values in [0, 1]."""
    img = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), mode="L")
    return np.asarray(img.resize(size, Image.BILINEAR), dtype=np.float32) / 255.0


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 array: the image in grey with the heatmap (matplotlib's ``inferno``) blended on top,
    more opaque where the heat is higher."""
    colormaps = require("matplotlib", extra="plots", purpose="drawing an explanation").colormaps
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    heat = upsample(heatmap, (grey.shape[1], grey.shape[0]))
    color = colormaps["inferno"](heat)[..., :3]
    a = alpha * heat[..., None]
    out = (1 - a) * grey[..., None] + a * color
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def explanation_text(expl: Explanation, n_answers: int = 5) -> list[str]:
    """Text lines of the explanation: the ranked answers, the GCA words and the gate."""
    lines = [f"{i}. {a}  ({100 * p:.1f} %)" for i, (a, p) in enumerate(zip(expl.answers[:n_answers],
                                                                           expl.probs[:n_answers]), 1)]
    if expl.gca_words:
        lines.append("GCA reads: " + ", ".join(f"{w} ({100 * v:.0f} %)" for w, v in expl.gca_words[:6]))
    if expl.gate_mean is not None:
        lines.append(f"mean GCA gate: {expl.gate_mean:.2f} (share of prior knowledge let in)")
    return lines


def draw_explanation(ax_image, ax_overlay, ax_text, expl: Explanation) -> None:
    """Fill three matplotlib axes: the image, the heatmap overlay and the texts."""
    img = expl.image.convert("L")
    ax_image.imshow(img, cmap="gray", vmin=0, vmax=255)
    ax_image.set_title("image", fontsize=10)
    ax_overlay.imshow(overlay(img, expl.heatmap))
    ax_overlay.set_title(f"what '{expl.answer}' depended on", fontsize=10)
    for ax in (ax_image, ax_overlay):
        ax.set_xticks([])
        ax.set_yticks([])
    ax_text.axis("off")
    q = "\n".join(textwrap.wrap(f"Q: {expl.question}", 60))
    body = "\n".join(textwrap.fill(line, 62) for line in explanation_text(expl))
    ax_text.text(0.0, 1.0, q + "\n\n" + body, va="top", ha="left", fontsize=9.5, family="monospace",
                 transform=ax_text.transAxes)


def save_explanation_png(expl: Explanation, path: str | Path, dpi: int = 100) -> Path:
    """One PNG with the image, the overlay and the texts."""
    matplotlib = require("matplotlib", extra="plots", purpose="drawing an explanation")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if expl.image is None:
        raise ValueError("the explanation carries no image (make it with VQAPredictor.explain)")
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    draw_explanation(*axes, expl)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
