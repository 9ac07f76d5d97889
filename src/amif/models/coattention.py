"""Two-stream co-attention fusion of question tokens and image patches (METER/M3AE style, spec 1.3).

Each layer, per stream: self-attention, cross-attention to the other stream, feed-forward, each a
post-LayerNorm residual block. Both streams are updated in parallel from the previous layer's outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from amif.config import FusionConfig
from amif.models.attention import FeedForward, MultiHeadAttention, apply_attention_init, init_weights


class CoAttentionLayer(nn.Module):
    """One stream's layer: ``x`` attends to itself and then to ``other``."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.self_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.cross_attn = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.cross_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.ffn = FeedForward(hidden_size, intermediate_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor | None, other: torch.Tensor, other_mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = self.self_norm(x + self.dropout(self.self_attn(x, context_mask=x_mask)))
        x = self.cross_norm(x + self.dropout(self.cross_attn(x, other, context_mask=other_mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class CoAttentionFusion(nn.Module):
    """Project both streams to a shared width, add modality-type embeddings, run N co-attention layers.

    The projections also give the global (CLS) features used by the contrastive losses, as in the paper's
    code: ``global_text_feature`` / ``global_image_feature`` are the L2-normalised projected CLS tokens.
    """

    TEXT, IMAGE = 0, 1

    def __init__(self, cfg: FusionConfig, text_width: int, image_width: int):
        super().__init__()
        h = cfg.hidden_size
        self.text_proj = nn.Linear(text_width, h)
        self.image_proj = nn.Linear(image_width, h)
        self.type_embedding = nn.Embedding(2, h)
        self.text_layers = nn.ModuleList(
            CoAttentionLayer(h, cfg.num_heads, cfg.intermediate_size, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.image_layers = nn.ModuleList(
            CoAttentionLayer(h, cfg.num_heads, cfg.intermediate_size, cfg.dropout) for _ in range(cfg.num_layers)
        )
        init_weights(self)
        apply_attention_init(self, cfg.attention_init)

    def project(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear projections of both streams into the shared width (no type embedding)."""
        return self.text_proj(text_tokens), self.image_proj(image_tokens)

    def fuse(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        image: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the co-attention layers on already projected streams; returns fused (text, image) tokens."""
        x = text + self.type_embedding.weight[self.TEXT]
        y = image + self.type_embedding.weight[self.IMAGE]
        for text_layer, image_layer in zip(self.text_layers, self.image_layers):
            x, y = text_layer(x, text_mask, y, image_mask), image_layer(y, image_mask, x, text_mask)
        return x, y

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project and fuse; ``text_mask`` is [B, Lt] with True/1 for real tokens."""
        text, image = self.project(text_tokens, image_tokens)
        return self.fuse(text, text_mask, image, image_mask)
