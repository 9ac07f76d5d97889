"""CLIP vision transformer image encoder built with ``transformers`` (docs/method.md#image-encoder).

The paper runs a 224-px CLIP ViT-B/16 at 288 px (position embeddings interpolated to an 18x18 grid)
and builds only the first 11 of its 12 blocks. The output is every token after the final LayerNorm
(``post_layernorm``), with no visual projection.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from amif.models.config import ImageEncoderConfig


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


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position embeddings ``[1 + grid**2, dim]`` (row 0, the CLS token, is zero).

    Half the channels encode the row, half the column, each as sines and cosines of geometrically
    spaced frequencies (Vaswani et al. 2017, in 2-D as in MAE): a token's position is then a large,
    linearly readable part of its features, which a randomly initialised N(0, 0.02) table is not.
    """
    if dim % 4:
        raise ValueError(f"sincos position embeddings need a hidden size divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                                torch.arange(grid, dtype=torch.float64), indexing="ij")
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angle = coord[:, None] * omega[None, :]
        parts += [angle.sin(), angle.cos()]
    table = torch.cat(parts, dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


class ConvStem(nn.Module):
    """Convolutional stem replacing CLIP's patchify convolution: log2(patch) blocks of 3x3 conv +
    2x2 max-pooling + BatchNorm + ReLU (channels doubling up to ``width``), then a 1x1 conv to
    ``width``. Same output grid as the patch stem; the convolutions give a ViT trained from scratch
    the locality prior it lacks (cf. Xiao et al., "Early convolutions help transformers see better",
    2021).

    Each block pools before BatchNorm and ReLU, so that these two run on a quarter of the values."""

    def __init__(self, width: int, patch_size: int, in_channels: int = 3):
        super().__init__()
        n = patch_size.bit_length() - 1
        if patch_size < 2 or 2**n != patch_size:
            raise ValueError(f"the conv stem needs a power-of-two patch_size, got {patch_size}")
        chans = [in_channels] + [max(8, width >> (n - i)) for i in range(1, n + 1)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
        self.blocks = nn.Sequential(*layers)
        self.proj = nn.Conv2d(chans[-1], width, 1)
        # channels-last convolutions: the layout oneDNN on CPUs and cuDNN on GPUs run fastest
        self.to(memory_format=torch.channels_last)

    @property
    def weight(self) -> torch.Tensor:  # CLIPVisionEmbeddings reads patch_embedding.weight.dtype
        return self.proj.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.blocks(x.contiguous(memory_format=torch.channels_last)))


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
            from amif.weights.clip_vision import load_clip_vision

            config, state = load_clip_vision(cfg.pretrained, image_size=cfg.image_size, num_layers=cfg.num_layers)
            config._attn_implementation = "sdpa"
            self.model = CLIPVisionModel(config)
            from amif.weights.checks import check_state_dict

            check_state_dict(self.model, state, context=f"image encoder weights {cfg.pretrained}")
            self.model.load_state_dict(state, strict=False)
        else:
            self.model = CLIPVisionModel(vision_config(cfg))
        self.width = self.model.config.hidden_size
        self.image_size = self.model.config.image_size
        if cfg.stem == "conv":
            if cfg.pretrained and config is None and load_pretrained:
                raise ValueError("image_encoder.stem 'conv' has no pretrained weights (set pretrained: null)")
            self.tower.embeddings.patch_embedding = ConvStem(self.width, self.model.config.patch_size,
                                                        self.model.config.num_channels)
        elif cfg.stem != "patch":
            raise ValueError(f"image_encoder.stem must be 'patch' or 'conv', got {cfg.stem!r}")
        if cfg.position_init not in ("random", "sincos"):
            raise ValueError(f"image_encoder.position_init must be 'random' or 'sincos', got {cfg.position_init!r}")
        if cfg.position_init == "sincos" and config is None:  # a rebuilt model gets its saved table
            if cfg.pretrained and load_pretrained:
                raise ValueError("image_encoder.position_init 'sincos' is for random initialisation")
            grid = self.image_size // self.model.config.patch_size
            with torch.no_grad():
                self.tower.embeddings.position_embedding.weight.copy_(sincos_position_embedding(grid, self.width))

    @property
    def tower(self) -> nn.Module:
        """The vision transformer itself: transformers 4.x wraps it in ``vision_model``, 5.x does not."""
        return getattr(self.model, "vision_model", self.model)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.model.config.patch_size) ** 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=pixel_values.shape[-1] != self.image_size,
        )
        return self.tower.post_layernorm(out.last_hidden_state)
