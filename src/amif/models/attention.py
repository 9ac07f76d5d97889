"""Multi-head attention on ``scaled_dot_product_attention`` with key padding masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def key_padding_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Turn a [B, Lk] validity mask (True/1 = real token) into a boolean [B, 1, 1, Lk] attention mask.

    A boolean mask (True = attend) gives the same softmax as an additive ``finfo.min`` bias whenever a
    row keeps at least one key, which every key padding mask here does (the first token is real), and
    it lets ``scaled_dot_product_attention`` choose a fused kernel.
    """
    if mask is None:
        return None
    return mask.bool()[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention: queries from ``x``, keys/values from ``context`` (or ``x``).

    ``context_mask`` ([B, Lk], True = real token) keeps padded keys out of every softmax. With
    ``causal=True`` a query attends only to keys at its own position or earlier.

    ``group = g`` shares one context row between ``g`` consecutive query rows (``x`` is [B * g, T, D],
    ``context`` [B, Lk, D]): the keys and values are projected once per context row and the g rows'
    queries are read against them as one query sequence of length g * T. Each query attends to the
    keys on its own, so this equals repeating the context g times, without the copies.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, context_size: int | None = None):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        context_size = context_size or hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(context_size, hidden_size)
        self.value = nn.Linear(context_size, hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``context`` [B, Lk, Dc], each [B, heads, Lk, head_dim]."""
        return self._split(self.key(context)), self._split(self.value(context))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        causal: bool = False,
        *,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        group: int = 1,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_kv: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``kv``: keys and values from :meth:`project_kv` (then ``context`` is not read). ``past``: keys
        and values of earlier positions [R, heads, Lp, head_dim], put before those of ``x`` (each of
        the R rows serves ``len(x) // R`` consecutive rows of ``x``); a causal mask then aligns the
        queries with the last keys. ``return_kv``: also return the keys and values attended to."""
        q = self._split(self.query(x))
        k, v = kv if kv is not None else self.project_kv(x if context is None else context)
        n, h, t, d = q.shape
        if past is not None:
            pk, pv = (p.repeat_interleave(n // p.shape[0], 0) for p in past)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        kept = (k, v)
        if group > 1:
            if causal:
                raise ValueError("group > 1 is for cross-attention; a causal mask needs one context per query row")
            q = q.view(n // group, group, h, t, d).transpose(1, 2).reshape(n // group, h, group * t, d)
        elif n != k.shape[0]:  # shared context (batch 1) for a batch of queries
            k, v = k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)
        mask = key_padding_mask(context_mask)
        if mask is not None and mask.shape[0] != q.shape[0]:
            mask = mask.expand(q.shape[0], -1, -1, -1)
        is_causal = False
        if causal:
            lq, lk = q.shape[2], k.shape[2]
            if mask is None and lq == lk:
                is_causal = True
            else:
                tri = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
                mask = tri if mask is None else mask & tri
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        if group > 1:
            out = out.view(n // group, h, group, t, d).transpose(1, 2).reshape(n, h, t, d)
        out = self.out(out.transpose(1, 2).reshape(n, t, h * d))
        return (out, kept) if return_kv else out


class FeedForward(nn.Module):
    """Position-wise feed-forward block: Linear -> activation -> dropout -> Linear."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style initialisation: N(0, std) weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def apply_attention_init(module: nn.Module, attention_init: str) -> None:
    """``"bert"``: keep N(0, 0.02); ``"xavier"``: :func:`xavier_init_attention` on every
    :class:`MultiHeadAttention` inside ``module`` (its other layers keep their init)."""
    if attention_init not in ("bert", "xavier"):
        raise ValueError(f"attention_init must be 'bert' or 'xavier', got {attention_init!r}")
    if attention_init == "xavier":
        for m in module.modules():
            if isinstance(m, MultiHeadAttention):
                xavier_init_attention(m)


def xavier_init_attention(attn: MultiHeadAttention) -> None:
    """Glorot-uniform query/key/value/output projections (zero biases) for a new attention layer.

    With BERT's N(0, 0.02) the value and output projections start so small that a new
    cross-attention layer's read-out, and the gradient of each projection (proportional to the other),
    nearly vanish: a small decoder then ignores its context for hundreds of steps (docs/architecture.md).
    """
    for lin in (attn.query, attn.key, attn.value, attn.out):
        nn.init.xavier_uniform_(lin.weight)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)
