"""Gated Cross-Attention (GCA) over the answer vocabulary (docs/method.md#gated-cross-attention).

The answer vocabulary, embedded with the question encoder's word embeddings, is refined by one
self-attention + feed-forward block. The fused image+question tokens then read it by cross-attention,
and a sigmoid gate per token and channel decides how much of that read-out replaces each fused
feature before a final feed-forward block:

    P1 = LN(P0 + SelfAttn(P0));  P2 = LN(P1 + FFN(P1))
    X1 = LN(F + CrossAttn(F, P2));  G = sigmoid(W X1 + b);  H = G * X1 + (1 - G) * F
    out = LN(H + FFN(H))

Differences from the published code: padded vocabulary positions are masked as keys in both
attentions, and every LayerNorm is ``nn.LayerNorm`` (the code used a custom unbiased-std variant).
"""

from __future__ import annotations

import torch
from torch import nn

from amif.models.attention import FeedForward, MultiHeadAttention, apply_attention_init, init_weights


class GatedCrossAttention(nn.Module):
    """Fuse an answer-vocabulary sequence into the fused features through a per-channel gate."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float = 0.1,
                 attention_init: str = "bert"):
        super().__init__()
        self.prior_attn = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.prior_attn_norm = nn.LayerNorm(hidden_size)
        self.prior_ffn = FeedForward(hidden_size, intermediate_size, activation="relu")
        self.prior_ffn_norm = nn.LayerNorm(hidden_size)
        self.cross_attn = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.cross_norm = nn.LayerNorm(hidden_size)
        self.gate = nn.Linear(hidden_size, hidden_size)
        self.out_ffn = FeedForward(hidden_size, intermediate_size, activation="relu")
        self.out_norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        init_weights(self)
        apply_attention_init(self, attention_init)

    def encode_prior(self, prior: torch.Tensor, prior_mask: torch.Tensor | None) -> torch.Tensor:
        """Self-attention + feed-forward over the vocabulary sequence [P, Lp, D] (P is 1 or B)."""
        p = self.prior_attn_norm(prior + self.dropout(self.prior_attn(prior, context_mask=prior_mask)))
        return self.prior_ffn_norm(p + self.dropout(self.prior_ffn(p)))

    def forward(
        self,
        fused: torch.Tensor,
        prior: torch.Tensor,
        prior_mask: torch.Tensor | None = None,
        return_gate: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``fused`` [B, L, D]; ``prior`` [1 or B, Lp, D] with ``prior_mask`` [1 or B, Lp] (True = real).

        Each fused token is processed independently of the other fused tokens (it only reads the
        vocabulary), so padded question tokens cannot change any real token's output.
        """
        return self.read(fused, self.encode_prior(prior, prior_mask), prior_mask, return_gate)

    def read(
        self,
        fused: torch.Tensor,
        encoded_prior: torch.Tensor,
        prior_mask: torch.Tensor | None = None,
        return_gate: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` with the vocabulary branch already computed (:meth:`encode_prior`), so that
        a model can reuse it across batches while the weights do not change."""
        x1 = self.cross_norm(fused + self.dropout(self.cross_attn(fused, encoded_prior, context_mask=prior_mask)))
        g = torch.sigmoid(self.gate(x1))
        h = g * x1 + (1.0 - g) * fused
        out = self.out_norm(h + self.dropout(self.out_ffn(h)))
        return (out, g) if return_gate else out
