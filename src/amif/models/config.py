"""The model section of an experiment file: encoders, fusion, GCA and decoder sizes and options.

Fine-tuning and pre-training share it, so a pre-trained folder loads into a VQA model of the same
section. Named architectures (:mod:`amif.registry`) are complete model sections.
"""

from __future__ import annotations

import dataclasses

from amif.configuration import check_choice
from amif.errors import ConfigError

__all__ = [
    "DecoderConfig", "FusionConfig", "GCAConfig", "ImageEncoderConfig", "ModelConfig", "TextEncoderConfig",
    "validate_model",
]


@dataclasses.dataclass
class ImageEncoderConfig:
    """CLIP vision transformer. Paper: ViT-B/16 at 288 px, first 11 of 12 blocks."""

    pretrained: str | None = None  # HF CLIP folder or OpenAI ViT-B-16.pt; None = random init
    image_size: int = 288
    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 11
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "quick_gelu"
    # "patch": CLIP's patchify convolution (the paper). "conv": a convolutional stem of 3x3 conv +
    # 2x2 max-pool + BatchNorm + ReLU blocks down to patch_size, then a 1x1 conv, for encoders trained
    # from scratch on little data, which learn local findings more readily through it. Random
    # initialisation only (no pretrained weights have it).
    stem: str = "patch"
    # Start of the learned position embeddings of a randomly initialised encoder. "random": CLIP's
    # N(0, 0.02). "sincos": fixed-frequency 2-D sine-cosine values (as MAE / MoCo v3 use for ViTs
    # trained from scratch), still learned afterwards. Random initialisation only.
    position_init: str = "random"


@dataclasses.dataclass
class TextEncoderConfig:
    """BERT-family question encoder loaded from a local folder (``minilm`` = the packaged MiniLM)."""

    path: str = "minilm"
    pretrained: bool = True  # False: same architecture from the folder's config, random weights
    num_layers: int | None = None  # keep only the first N layers (None: all)
    max_length: int = 30
    # keep the word-embedding matrices (question encoder and the decoder's tied copy) fixed: for small
    # data, and a smaller backward pass and optimiser state with a 30k-word vocabulary
    freeze_word_embeddings: bool = False


@dataclasses.dataclass
class FusionConfig:
    """Two-stream co-attention layers (self-attention, cross-attention, feed-forward per stream)."""

    hidden_size: int = 768
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 3072
    dropout: float = 0.1
    # initialisation of the (new) attention layers: "bert" (N(0, 0.02), the published code) or "xavier"
    # (Glorot-uniform projections: a short run from scratch learns question-image interactions sooner);
    # the feed-forward layers keep N(0, 0.02) either way
    attention_init: str = "bert"


@dataclasses.dataclass
class GCAConfig:
    """Gated cross-attention: the fused features read the encoded answer vocabulary through a learned gate."""

    enabled: bool = True
    num_heads: int = 12
    intermediate_size: int = 3072
    dropout: float = 0.1
    prior_mode: str = "vocab"  # "vocab": set of answer words; "sentence": whole answers
    max_prior_length: int = 3000
    attention_init: str = "bert"  # "bert" or "xavier", as model.fusion.attention_init


@dataclasses.dataclass
class DecoderConfig:
    """Causal BERT-style answer decoder with cross-attention to the fused features."""

    num_layers: int | None = None  # None: as many as the text encoder has
    cross_attention_from: int = 6  # layers with index >= this get cross-attention
    init_from_text_encoder: bool = True  # copy the text encoder's pretrained weights
    max_answer_length: int = 30
    rank_k: int = 32  # candidates kept by first-token probability before full re-scoring
    dropout: float = 0.1
    # initialisation of the new cross-attention layers: "xavier" (default; Glorot-uniform projections)
    # or "bert" (N(0, 0.02), as the published code); see docs/architecture.md
    cross_attention_init: str = "xavier"
    # "full": the LM head scores the whole word-piece vocabulary (the paper). "answers": only the
    # tokens of the candidate answers and vocabulary words, in training and ranking (a much smaller
    # softmax, which need not first learn to push 30k never-used tokens down); answers outside the
    # candidate list cannot be generated then
    output_vocabulary: str = "full"


@dataclasses.dataclass
class ModelConfig:
    image_encoder: ImageEncoderConfig = dataclasses.field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = dataclasses.field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    gca: GCAConfig = dataclasses.field(default_factory=GCAConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)


def validate_model(m: ModelConfig) -> None:
    """Cross-field checks of a model section that types alone cannot express."""
    check_choice(m.gca.prior_mode, ("vocab", "sentence"), "model.gca.prior_mode")
    check_choice(m.image_encoder.stem, ("patch", "conv"), "model.image_encoder.stem")
    check_choice(m.image_encoder.position_init, ("random", "sincos"), "model.image_encoder.position_init")
    check_choice(m.decoder.output_vocabulary, ("full", "answers"), "model.decoder.output_vocabulary")
    check_choice(m.decoder.cross_attention_init, ("xavier", "bert"), "model.decoder.cross_attention_init")
    check_choice(m.fusion.attention_init, ("bert", "xavier"), "model.fusion.attention_init")
    check_choice(m.gca.attention_init, ("bert", "xavier"), "model.gca.attention_init")
    ie = m.image_encoder
    if ie.stem == "conv" and ie.pretrained:
        raise ConfigError("config.model.image_encoder.stem 'conv' has no pretrained weights: "
                          "use it with image_encoder.pretrained: null")
    if ie.position_init == "sincos" and ie.pretrained:
        raise ConfigError("config.model.image_encoder.position_init 'sincos' is for random initialisation: "
                          "use it with image_encoder.pretrained: null")
    if ie.stem == "conv" and (ie.patch_size < 2 or ie.patch_size & (ie.patch_size - 1)):
        raise ConfigError(f"config.model.image_encoder.stem 'conv' needs a power-of-two patch_size, got {ie.patch_size}")
    if m.fusion.hidden_size % m.fusion.num_heads:
        raise ConfigError("config.model.fusion.hidden_size must be divisible by num_heads")
    if m.fusion.hidden_size % m.gca.num_heads:
        raise ConfigError("config.model.fusion.hidden_size must be divisible by gca.num_heads")
