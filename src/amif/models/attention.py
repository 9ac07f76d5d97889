"""Multi-head attention on ``scaled_dot_product_attention`` with key padding masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def key_padding_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a [B, Lk] validity mask (True/1 = real token) into an additive [B, 1, 1, Lk] bias."""
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias = bias.masked_fill(~mask.bool(), torch.finfo(dtype).min)
    return bias[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention: queries from ``x``, keys/values from ``context`` (or ``x``).

    ``context_mask`` ([B, Lk], True = real token) keeps padded keys out of every softmax. With
    ``causal=True`` a query attends only to keys at its own position or earlier.
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

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self._split(self.query(x)), self._split(self.key(context)), self._split(self.value(context))
        if q.shape[0] != k.shape[0]:  # shared context (batch 1) for a batch of queries
            k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        bias = key_padding_bias(context_mask, q.dtype)
        if bias is not None and bias.shape[0] != q.shape[0]:
            bias = bias.expand(q.shape[0], -1, -1, -1)
        if causal:
            lq, lk = q.shape[2], k.shape[2]
            causal_mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
            causal_bias = torch.zeros(lq, lk, dtype=q.dtype, device=q.device).masked_fill(
                ~causal_mask, torch.finfo(q.dtype).min
            )
            bias = causal_bias if bias is None else bias + causal_bias
            bias = bias.clamp(min=torch.finfo(q.dtype).min)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        b, h, n, d = out.shape
        return self.out(out.transpose(1, 2).reshape(b, n, h * d))


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
