"""Image-text retrieval recall@K, the validation metric of pre-training.

``recall_at_k`` ranks every text for each image (i2t) and every image for each text (t2i) by cosine
similarity. A query counts as a hit at K when one of its positives is among the K best candidates.
Positives are the diagonal by default (image i goes with text i); a corpus where several images share
a caption (studies with several views, or identical captions) passes a positive mask instead.

Ties are counted **against** the query: the rank of a query is the number of non-positive candidates
whose score is at least that of its best positive. So a collapsed model whose features are all equal
scores 0, not 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["caption_positive_mask", "evaluate_retrieval", "recall_at_k", "retrieval_ranks"]


def retrieval_ranks(sim: Tensor, positive: Tensor) -> Tensor:
    """For each row of ``sim [Q, C]``: the number of non-positive columns scoring >= its best positive.

    ``positive [Q, C]`` bool; every row needs at least one positive. Rank 0 means the best positive is
    strictly first.
    """
    if sim.dim() != 2 or positive.shape != sim.shape:
        raise ValueError(f"sim [Q, C] and a positive mask of the same shape expected, got "
                         f"{tuple(sim.shape)} and {tuple(positive.shape)}")
    positive = positive.to(device=sim.device, dtype=torch.bool)
    empty = ~positive.any(dim=1)
    if bool(empty.any()):
        row = int(empty.nonzero()[0, 0])
        raise ValueError(f"query {row} has no positive in the positive mask")
    best = sim.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    return ((sim >= best) & ~positive).sum(dim=1)


def recall_at_k(
    image_feats: Tensor,
    text_feats: Tensor,
    ks: Iterable[int] = (1, 5, 10),
    positive_mask: Tensor | None = None,
) -> dict[str, float]:
    """Recall@K of image->text (``i2t_rK``) and text->image (``t2i_rK``) retrieval, plus their mean.

    Args:
        image_feats: ``[Ni, D]`` image features; text_feats: ``[Nt, D]``. Both are L2-normalised here.
        ks: the K values.
        positive_mask: ``[Ni, Nt]`` bool, True where text j describes image i. Default: the identity
            (needs ``Ni == Nt``).

    Returns ``{"i2t_r1": ..., "t2i_r1": ..., ..., "recall_mean": ...}`` with values in [0, 1];
    ``recall_mean`` averages all i2t and t2i entries.
    """
    if image_feats.dim() != 2 or text_feats.dim() != 2 or image_feats.shape[1] != text_feats.shape[1]:
        raise ValueError(f"image [Ni, D] and text [Nt, D] features expected, got {tuple(image_feats.shape)} "
                         f"and {tuple(text_feats.shape)}")
    ni, nt = image_feats.shape[0], text_feats.shape[0]
    if positive_mask is None:
        if ni != nt:
            raise ValueError(f"{ni} images but {nt} texts: pass a positive_mask")
        positive_mask = torch.eye(ni, dtype=torch.bool, device=image_feats.device)
    if positive_mask.shape != (ni, nt):
        raise ValueError(f"positive_mask must be [{ni}, {nt}], got {tuple(positive_mask.shape)}")
    img = F.normalize(image_feats.float(), dim=-1)
    txt = F.normalize(text_feats.float(), dim=-1)
    sim = img @ txt.T
    pos = positive_mask.to(sim.device).bool()
    ranks = {"i2t": retrieval_ranks(sim, pos), "t2i": retrieval_ranks(sim.T, pos.T)}
    out: dict[str, float] = {}
    for k in sorted(set(int(k) for k in ks)):
        if k < 1:
            raise ValueError(f"K must be >= 1, got {k}")
        for name, r in ranks.items():
            out[f"{name}_r{k}"] = float((r < k).float().mean())
    out["recall_mean"] = sum(out.values()) / len(out)
    return out


def caption_positive_mask(keys: Tensor | Sequence[Any]) -> Tensor:
    """Positive mask ``[N, N]`` of items sharing a caption: ``keys[i] == keys[j]`` (keys: ints or strings)."""
    if not isinstance(keys, Tensor):
        index: dict[Any, int] = {}
        keys = torch.tensor([index.setdefault(k, len(index)) for k in keys], dtype=torch.long)
    return keys[:, None] == keys[None, :]


@torch.no_grad()
def evaluate_retrieval(
    model: Any,
    loader: Iterable[dict[str, Any]],
    ks: Iterable[int] = (1, 5, 10),
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Recall@K of a pre-training model over a loader of collated pre-training batches (one process).

    ``model`` needs ``image_features(pixels)`` and ``text_features(ids, mask)``; positives are the items
    with the same caption (``batch["caption_key"]``).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    imgs, txts, keys = [], [], []
    try:
        for batch in loader:
            imgs.append(model.image_features(batch["image1"].to(device)).float().cpu())
            txts.append(model.text_features(batch["input_ids"].to(device),
                                            batch["attention_mask"].to(device)).float().cpu())
            keys.append(batch["caption_key"].cpu())
    finally:
        model.train(was_training)
    if not imgs:
        raise ValueError("the retrieval loader is empty")
    return recall_at_k(torch.cat(imgs), torch.cat(txts), ks, caption_positive_mask(torch.cat(keys)))
