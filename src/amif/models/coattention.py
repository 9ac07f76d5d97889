"""Two-stream co-attention fusion of question tokens and image patches (METER/M3AE style,
docs/method.md#co-attention-fusion).

Each layer, per stream: self-attention, cross-attention to the other stream, feed-forward, each a
post-LayerNorm residual block. Both streams are updated in parallel from the previous layer's outputs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from amif.models.attention import FeedForward, MultiHeadAttention, apply_attention_init, init_weights
from amif.models.config import FusionConfig


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
        # recompute each layer pair's activations in the backward pass (see enable_activation_checkpointing)
        self.checkpoint_layers = False

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
            if self.checkpoint_layers and torch.is_grad_enabled():
                x, y = checkpoint(_layer_pair, text_layer, image_layer, x, text_mask, y, image_mask,
                                  use_reentrant=False)
            else:
                x, y = _layer_pair(text_layer, image_layer, x, text_mask, y, image_mask)
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


def _layer_pair(text_layer: CoAttentionLayer, image_layer: CoAttentionLayer, x: torch.Tensor,
                text_mask: torch.Tensor, y: torch.Tensor, image_mask: torch.Tensor | None):
    """One co-attention layer of both streams, each reading the other's previous output."""
    return text_layer(x, text_mask, y, image_mask), image_layer(y, image_mask, x, text_mask)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Keep only each transformer layer's input for the backward pass and recompute the rest there.

    Applies to the image and text encoders (transformers' gradient checkpointing, active in training
    mode) and to the co-attention layers of ``model.fusion``. Dropout draws are replayed, so losses and
    gradients are those of the plain model; a training step costs about one more forward pass.
    """
    for name in ("image_encoder", "text_encoder"):
        encoder = getattr(model, name, None)
        if encoder is None:
            continue
        kwargs = {"use_reentrant": False}
        if hasattr(encoder.model, "activation_checkpointing_enable"):  # transformers >= 5.x
            encoder.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            encoder.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    fusion = getattr(model, "fusion", None)
    if isinstance(fusion, CoAttentionFusion):
        fusion.checkpoint_layers = True
