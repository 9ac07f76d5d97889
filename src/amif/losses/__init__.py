"""AMiF pre-training losses: soft-label contrastive alignment, hard-negative ITM, optimal-transport WPA.

All functions are batched, device-agnostic and work unchanged under DDP when given gathered features
(:mod:`amif.distributed`) and the matching ``pos_index``.
"""

from amif.losses.contrastive import (
    LearnableTemperature,
    TargetMode,
    contrastive_direction,
    counterfactual_contrast,
    hard_label_contrastive,
    image_image_loss,
    image_text_loss,
    kl_contrastive,
    soft_targets,
    text_text_loss,
)
from amif.losses.hard_negatives import (
    ITMBatch,
    NegativeMode,
    build_itm_batch,
    itm_loss,
    sample_hard_negatives,
)
from amif.losses.optimal_transport import OTMethod, cosine_cost, ipot, sinkhorn, wpa_loss

__all__ = [
    "ITMBatch",
    "LearnableTemperature",
    "NegativeMode",
    "OTMethod",
    "TargetMode",
    "build_itm_batch",
    "contrastive_direction",
    "counterfactual_contrast",
    "cosine_cost",
    "hard_label_contrastive",
    "image_image_loss",
    "image_text_loss",
    "ipot",
    "itm_loss",
    "kl_contrastive",
    "sample_hard_negatives",
    "sinkhorn",
    "soft_targets",
    "text_text_loss",
    "wpa_loss",
]
