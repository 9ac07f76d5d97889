"""Answer explanations: ranked answers, a patch heatmap, the GCA's most-read vocabulary words and its gate.

The heatmap is *gradient x activation* on the image encoder's patch tokens: the log-probability the
ranking gives the chosen answer (softmax over the re-scored candidates) is differentiated with respect
to every patch token, and each patch scores ``max(0, <grad, token>)``. That is the first-order
estimate of how much the answer's probability would drop if the patch's features were removed, and
it follows every path from the patch to the answer (co-attention, GCA, all decoder layers) where a
single layer's attention weights show only one hop (docs/explain.md). The model is untouched: a
forward hook makes the patch tokens a leaf that records its gradient, and one on the GCA reads its
attention and gate, so the explanation sees exactly the computation ``AMiFVQA.rank`` runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from amif.models.vqa import AMiFVQA

METHODS = ("tokens", "context")


@dataclass
class Explanation:
    """What the model answered and why, for one image and question.

    ``heatmap`` is ``[grid, grid]`` (one value per image patch, non-negative, max 1 unless all zero);
    ``gca_words`` the vocabulary entries the GCA's cross-attention reads most, with their share of the
    attention (averaged over heads and over the fused tokens); ``gate_mean`` the mean GCA gate value
    (0: no prior knowledge entered the fused features, 1: the read-out replaced them).
    """

    question: str
    answers: list[str]
    probs: list[float]
    heatmap: np.ndarray
    gca_words: list[tuple[str, float]] = field(default_factory=list)
    gate_mean: float | None = None
    method: str = "tokens"
    image: object | None = None  # the PIL image shown (set by VQAPredictor.explain)

    @property
    def answer(self) -> str:
        return self.answers[0]

    def to_json(self) -> dict:
        return {"question": self.question, "answers": [{"answer": a, "prob": p} for a, p in zip(self.answers, self.probs)],
                "heatmap": np.round(self.heatmap, 4).tolist(), "method": self.method,
                "gca_words": [{"word": w, "weight": round(v, 4)} for w, v in self.gca_words],
                "gate_mean": None if self.gate_mean is None else round(self.gate_mean, 4)}


@contextmanager
def _hooks(model: AMiFVQA) -> Iterator[dict]:
    """Record the patch tokens as a gradient leaf, the GCA's cross-attention inputs and its gate."""
    seen: dict = {}

    def on_image(_module, _inputs, output):
        leaf = output.detach().requires_grad_(True)
        seen["tokens"] = leaf
        return leaf

    handles = [model.image_encoder.register_forward_hook(on_image)]
    if model.gca is not None:
        def on_cross(_module, args, kwargs):
            seen["gca_query"], seen["gca_prior"] = args[0].detach(), args[1].detach()

        def on_gate(_module, _inputs, output):
            seen["gate"] = torch.sigmoid(output.detach())

        handles.append(model.gca.cross_attn.register_forward_pre_hook(on_cross, with_kwargs=True))
        handles.append(model.gca.gate.register_forward_hook(on_gate))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _gca_attention(model: AMiFVQA, query: torch.Tensor, prior: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """Attention weights [Lp] of the GCA's cross-attention, averaged over heads and real fused tokens."""
    attn = model.gca.cross_attn
    q = attn._split(attn.query(query))
    k = attn._split(attn.key(prior)).expand(q.shape[0], -1, -1, -1)
    scores = q @ k.transpose(-1, -2) / attn.head_dim**0.5
    scores = scores.masked_fill(~model.prior_mask[:, None, None, :], float("-inf"))
    w = scores.softmax(-1).mean(1)  # [B, Lq, Lp]
    m = query_mask.to(w.dtype)[..., None]
    return ((w * m).sum(1) / m.sum(1)).mean(0)


def vocabulary_spans(model: AMiFVQA) -> list[tuple[str, list[int]]]:
    """Each vocabulary entry with the positions of its word pieces in ``model.prior_ids``."""
    text = " ".join(model.vocabulary)
    enc = model.tokenizer([text], return_offsets_mapping=True, truncation=False)
    ends, start = [], 0
    for word in model.vocabulary:  # character span of each entry in the joined text
        ends.append(start + len(word))
        start += len(word) + 1
    j = 0
    pieces: list[list[int]] = [[] for _ in model.vocabulary]
    for pos, (a, b) in enumerate(enc["offset_mapping"][0]):
        if b <= a:  # special tokens
            continue
        while j < len(ends) - 1 and a >= ends[j]:
            j += 1
        pieces[j].append(pos)
    return [(w, p) for w, p in zip(model.vocabulary, pieces) if p]


def gca_top_words(model: AMiFVQA, weights: torch.Tensor, k: int = 8) -> list[tuple[str, float]]:
    """The ``k`` vocabulary entries with the largest summed attention over their word pieces."""
    w = weights.detach().float().cpu()
    scored = [(word, float(w[pos].sum())) for word, pos in vocabulary_spans(model)]
    scored.sort(key=lambda t: -t[1])
    return scored[:k]


def explain_batch(
    model: AMiFVQA,
    pixel_values: torch.Tensor,
    question: str,
    *,
    top_k: int = 5,
    n_words: int = 8,
    method: str = "tokens",
) -> Explanation:
    """Explain the model's answer to one ``question`` (already normalised) about one image ``[1, 3, H, W]``.

    ``method``: ``"tokens"`` (gradient x activation on the image encoder's patch tokens, the default)
    or ``"context"`` (the same on the image positions of the fused features the decoder reads).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model.eval()
    device = next(model.parameters()).device
    ids, mask = model.tokenize_questions([question])
    ids, mask, pixels = ids.to(device), mask.to(device), pixel_values.to(device)
    ranked = model.rank(pixels, ids, mask)
    order = ranked.indices[0]
    with _hooks(model) as seen, torch.enable_grad():
        context, cmask = model.fuse(pixels, ids, mask)
        k = len(order)
        ll = model.decoder.sequence_log_likelihood(
            model.candidate_ids[order], model.candidate_mask[order],
            context.expand(k, -1, -1), cmask.expand(k, -1),
        )
        # only the explained tensor's gradient: no parameter gradient is computed or left behind
        wrt = seen["tokens"] if method == "tokens" else context
        (grad,) = torch.autograd.grad(ll.log_softmax(0)[0], wrt)
    n_img = seen["tokens"].shape[1]
    act, grad = wrt[0, -n_img + 1:], grad[0, -n_img + 1:]  # the patch positions (CLS left out)
    heat = (grad * act).sum(-1).clamp(min=0).detach().float().cpu()
    grid = int(round(heat.numel() ** 0.5))
    heat = heat.view(grid, grid).numpy()
    if heat.max() > 0:
        heat = heat / heat.max()
    words: list[tuple[str, float]] = []
    gate = None
    if model.gca is not None and "gate" in seen:
        qmask = torch.cat([mask.bool(), torch.ones(1, seen["gca_query"].shape[1] - mask.shape[1], dtype=torch.bool,
                                                   device=device)], 1)
        with torch.no_grad():
            weights = _gca_attention(model, seen["gca_query"], seen["gca_prior"], qmask)
        words = gca_top_words(model, weights, n_words)
        g = seen["gate"][0][qmask[0]]
        gate = float(g.mean())
    return Explanation(question=question, answers=[model.answer_candidates[i] for i in order[:top_k].tolist()],
                       probs=[round(p, 6) for p in ranked.probs[0, :top_k].tolist()], heatmap=heat,
                       gca_words=words, gate_mean=gate, method=method)


def patch_mask(lesions: Sequence[dict], image_hw: tuple[int, int], grid: int) -> np.ndarray:
    """Boolean ``[grid, grid]``: the patches a lesion disk (``center_px`` [row, col], ``diameter_px``,
    in the stored image's pixels) overlaps."""
    h, w = image_hw
    rows = (np.arange(grid * 8) + 0.5) * h / (grid * 8)
    cols = (np.arange(grid * 8) + 0.5) * w / (grid * 8)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    inside = np.zeros(rr.shape, dtype=bool)
    for les in lesions:
        r0, c0 = les["center_px"]
        rad = max(float(les["diameter_px"]) / 2, 0.5)
        inside |= (rr - r0) ** 2 + (cc - c0) ** 2 <= rad**2
    return inside.reshape(grid, 8, grid, 8).any(axis=(1, 3))
