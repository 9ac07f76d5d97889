"""CLIP vision transformer image encoder built with ``transformers`` (spec 1.1).

The paper runs a 224-px CLIP ViT-B/16 at 288 px (position embeddings interpolated to an 18x18 grid)
and builds only the first 11 of its 12 blocks. The output is every token after the final LayerNorm
(``post_layernorm``), with no visual projection.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from amif.config import ImageEncoderConfig


def vision_config(cfg: ImageEncoderConfig) -> CLIPVisionConfig:
    """The transformers config of the image encoder described by ``cfg`` (random-init architecture)."""
    config = CLIPVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act=cfg.hidden_act,
    )
    config._attn_implementation = "sdpa"
    return config


class ImageEncoder(nn.Module):
    """Image -> token features [B, 1 + num_patches, width] (CLS first)."""

    def __init__(
        self, cfg: ImageEncoderConfig, config: CLIPVisionConfig | None = None, load_pretrained: bool = True
    ):
        super().__init__()
        if config is not None:  # rebuilding a saved model: architecture only, weights come later
            config._attn_implementation = "sdpa"
            self.model = CLIPVisionModel(config)
        elif cfg.pretrained and load_pretrained:
            from amif.models.pretrained import load_clip_vision

            config, state = load_clip_vision(cfg.pretrained, image_size=cfg.image_size, num_layers=cfg.num_layers)
            config._attn_implementation = "sdpa"
            self.model = CLIPVisionModel(config)
            from amif.models.pretrained import check_state_dict

            check_state_dict(self.model, state, context=f"image encoder weights {cfg.pretrained}")
            self.model.load_state_dict(state, strict=False)
        else:
            self.model = CLIPVisionModel(vision_config(cfg))
        self.width = self.model.config.hidden_size
        self.image_size = self.model.config.image_size

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.model.config.patch_size) ** 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=pixel_values.shape[-1] != self.image_size,
        )
        # transformers 4.x wraps the tower in ``vision_model``; 5.x does not
        tower = getattr(self.model, "vision_model", self.model)
        return tower.post_layernorm(out.last_hidden_state)
