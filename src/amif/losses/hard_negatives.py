"""Hard-negative mining and the image-text matching (ITM) loss.

ALBEF-style mining, with the published AMiF code's bugs fixed: the weights are ``softmax(sim / τ)`` (not raw
cosines, which may be negative), the true positive is removed at its *global* column ``pos_index`` (not at
column ``i`` of the masked vector), the drawn index addresses the unmasked gathered matrix, one negative
text is drawn per image **and** one negative image per text, and every negative keeps its own attention
mask. ITM is a plain cross-entropy over the 3B pairs (no clamping of the logits).

Typical use (``a``/``b`` local global features, ``a_all``/``b_all`` gathered, ``p = positive_index(B)``)::

    neg_text = sample_hard_negatives(a @ b_all.T, p)    # [B] rows of the gathered text tensors
    neg_image = sample_hard_negatives(b @ a_all.T, p)   # [B] rows of the gathered image tensors
    batch = build_itm_batch(img_tok, img_mask, txt_tok, txt_mask,
                            img_tok_all, img_mask_all, txt_tok_all, txt_mask_all, neg_text, neg_image)
    logits = itm_head(fusion(batch.image_tokens, batch.image_mask, batch.text_tokens, batch.text_mask))
    loss = itm_loss(logits, batch.labels)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from amif.errors import ConfigError

__all__ = ["ITMBatch", "NegativeMode", "build_itm_batch", "itm_loss", "sample_hard_negatives"]

NegativeMode = Literal["sample", "most_similar"]


@torch.no_grad()
def sample_hard_negatives(
    sim: Tensor,
    pos_index: Tensor,
    temperature: float | Tensor = 0.07,
    mode: NegativeMode = "sample",
    generator: torch.Generator | None = None,
    exclude: Tensor | None = None,
    return_valid: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """One hard negative column per row: a LongTensor ``[B]`` of indices in ``[0, N)``, never ``pos_index``.

    Args:
        sim: ``[B, N]`` similarities of the local anchors (rows) to the gathered candidates (columns),
            e.g. ``a @ b_allᵀ`` for negative texts of each image. Detached here.
        pos_index: ``[B]`` global column of each row's positive (``positive_index(B)``).
        temperature: sampling temperature τ; weights are ``softmax(sim / τ)`` over the allowed columns
            (the positive's weight set to 0 and the rest renormalised). A learnable τ may be passed.
        mode: ``"sample"`` draws with ``torch.multinomial``; ``"most_similar"`` takes the arg-max over the
            allowed columns (deterministic; ties go to the lowest column).
        generator: a ``torch.Generator`` on ``sim``'s device, for reproducible draws.
        exclude: optional ``[B, N]`` bool mask of further columns never to pick (e.g. captions identical
            to the anchor's own, or other views of its study).
        return_valid: with ``exclude``, a row may have no allowed column left. False: that raises a
            ValueError. True: returns ``(index, valid)``, where ``valid [B]`` is False for such rows and
            their ``index`` is the positive (a placeholder for the caller to leave out); no host sync.
    """
    if sim.dim() != 2:
        raise ValueError(f"sim must be [B, N], got shape {tuple(sim.shape)}")
    rows, cols = sim.shape
    if pos_index.shape != (rows,) or pos_index.dtype != torch.long:
        raise ValueError(
            f"pos_index must be a LongTensor [B={rows}], got {pos_index.dtype} {tuple(pos_index.shape)}"
        )
    if cols < 2:
        raise ValueError(
            f"hard-negative mining needs at least 2 candidate columns, got N={cols}; "
            "use a (global) batch size of at least 2"
        )
    if mode not in ("sample", "most_similar"):
        raise ConfigError(f"unknown hard-negative mode {mode!r}; expected 'sample' or 'most_similar'")
    blocked = torch.zeros(rows, cols, dtype=torch.bool, device=sim.device)
    blocked.scatter_(1, pos_index[:, None], True)
    if exclude is not None:
        if exclude.shape != sim.shape:
            raise ValueError(
                f"exclude must have the shape of sim {tuple(sim.shape)}, got {tuple(exclude.shape)}"
            )
        blocked |= exclude.to(device=sim.device, dtype=torch.bool)
    valid = ~blocked.all(dim=1)
    if return_valid:  # a row with nothing allowed draws its positive, flagged invalid
        positive = torch.zeros_like(blocked).scatter_(1, pos_index[:, None], True)
        blocked = blocked & ~(positive & ~valid[:, None])
    elif exclude is not None and not bool(valid.all()):
        raise ValueError("a row has no allowed negative column left after 'exclude'")
    scores = sim.detach().float()
    if mode == "most_similar":
        index = scores.masked_fill(blocked, float("-inf")).argmax(dim=1)
    else:
        weights = (scores / temperature).masked_fill(blocked, float("-inf")).softmax(dim=1)
        index = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return (index, valid) if return_valid else index


@dataclass
class ITMBatch:
    """The 3B image-text pairs for ITM: rows ``[0, B)`` positives ``(image_i, text_i)``, rows ``[B, 2B)``
    ``(image_i, negative text)``, rows ``[2B, 3B)`` ``(negative image, text_i)``.

    ``image_tokens [3B, Li, Di]``, ``image_mask [3B, Li]`` (or None), ``text_tokens [3B, Lt, Dt]``,
    ``text_mask [3B, Lt]``, ``labels [3B]`` long (1 matching, 0 not).
    """

    image_tokens: Tensor
    image_mask: Tensor | None
    text_tokens: Tensor
    text_mask: Tensor
    labels: Tensor


def _check_tokens(tokens: Tensor, mask: Tensor | None, name: str) -> None:
    if tokens.dim() != 3:
        raise ValueError(f"{name} tokens must be [B, L, D], got shape {tuple(tokens.shape)}")
    if mask is not None and mask.shape != tokens.shape[:2]:
        raise ValueError(f"{name} mask must be {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}")


def build_itm_batch(
    image_tokens: Tensor,
    image_mask: Tensor | None,
    text_tokens: Tensor,
    text_mask: Tensor,
    image_tokens_all: Tensor,
    image_mask_all: Tensor | None,
    text_tokens_all: Tensor,
    text_mask_all: Tensor,
    neg_text_index: Tensor,
    neg_image_index: Tensor,
) -> ITMBatch:
    """Assemble the 3B ITM pairs (see :class:`ITMBatch`), each negative with its own attention mask.

    Args:
        image_tokens, image_mask: local image token features ``[B, Li, Di]`` and mask ``[B, Li]``
            (any dtype, passed through; None when all patches are valid, then ``image_mask_all`` is None).
        text_tokens, text_mask: local text token features ``[B, Lt, Dt]`` and mask ``[B, Lt]``.
        image_tokens_all, image_mask_all, text_tokens_all, text_mask_all: the same gathered over ranks,
            ``[N, ...]`` (``gather_no_grad``; texts padded to one fixed length on every rank).
        neg_text_index: ``[B]`` rows of ``text_*_all`` that are the negative text of each local image.
        neg_image_index: ``[B]`` rows of ``image_*_all`` that are the negative image of each local text.
    """
    _check_tokens(image_tokens, image_mask, "image")
    _check_tokens(text_tokens, text_mask, "text")
    _check_tokens(image_tokens_all, image_mask_all, "gathered image")
    _check_tokens(text_tokens_all, text_mask_all, "gathered text")
    if (image_mask is None) != (image_mask_all is None):
        raise ValueError("image_mask and image_mask_all must both be given or both be None")
    b = image_tokens.shape[0]
    if text_tokens.shape[0] != b or neg_text_index.shape != (b,) or neg_image_index.shape != (b,):
        raise ValueError(
            f"local batch mismatch: images {b}, texts {text_tokens.shape[0]}, "
            f"neg_text_index {tuple(neg_text_index.shape)}, neg_image_index {tuple(neg_image_index.shape)}"
        )
    if (
        image_tokens_all.shape[1:] != image_tokens.shape[1:]
        or text_tokens_all.shape[1:] != text_tokens.shape[1:]
    ):
        raise ValueError(
            "gathered tokens must have the local tokens' length and width (pad to a fixed length)"
        )

    neg_text_tokens = text_tokens_all.index_select(0, neg_text_index)
    neg_text_mask = text_mask_all.index_select(0, neg_text_index)
    neg_image_tokens = image_tokens_all.index_select(0, neg_image_index)

    images = torch.cat([image_tokens, image_tokens, neg_image_tokens.to(image_tokens.dtype)], dim=0)
    texts = torch.cat([text_tokens, neg_text_tokens.to(text_tokens.dtype), text_tokens], dim=0)
    text_masks = torch.cat([text_mask, neg_text_mask.to(text_mask.dtype), text_mask], dim=0)
    image_masks = None
    if image_mask is not None and image_mask_all is not None:
        neg_image_mask = image_mask_all.index_select(0, neg_image_index)
        image_masks = torch.cat([image_mask, image_mask, neg_image_mask.to(image_mask.dtype)], dim=0)
    labels = torch.zeros(3 * b, dtype=torch.long, device=image_tokens.device)
    labels[:b] = 1
    return ITMBatch(images, image_masks, texts, text_masks, labels)


def itm_loss(logits: Tensor, labels: Tensor, keep: Tensor | None = None) -> Tensor:
    """Image-text matching loss: plain cross-entropy of ``logits [3B, 2]`` against ``labels [3B]``.

    Class 1 means "matching". The logits are not clamped (the published code clamped them to
    ``[1e-7, 1 - 1e-7]``, which kills the gradient and caps the logit gap). ``keep [3B]`` bool leaves
    pairs out (e.g. a negative that could not be drawn); the loss is the mean over the kept pairs.
    """
    if logits.dim() != 2 or logits.shape[1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"logits [M, 2] and labels [M] expected, got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if keep is None:
        return F.cross_entropy(logits.float(), labels)
    if keep.shape != labels.shape:
        raise ValueError(f"keep must be [M]={tuple(labels.shape)}, got {tuple(keep.shape)}")
    w = keep.to(device=logits.device, dtype=torch.float32)
    return (F.cross_entropy(logits.float(), labels, reduction="none") * w).sum() / w.sum().clamp_min(1.0)
