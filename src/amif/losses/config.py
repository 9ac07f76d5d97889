"""The ``losses`` section of a pre-training file: which losses run, and their parameters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from amif.errors import ConfigError

__all__ = ["LossConfig", "validate_losses"]


@dataclasses.dataclass
class LossConfig:
    """Which pre-training losses run and their parameters (docs/pretraining.md)."""

    itgc: bool = True  # image-text global contrastive
    imvc: bool = True  # image view 1 - view 2 contrastive
    utgc: bool = True  # text-text relational distillation
    wpa: bool = True  # optimal-transport word-patch alignment (stage >= 1)
    itm: bool = True  # image-text matching with hard negatives (stage >= 1)
    # ITM also scores each image against its record's counterfactual caption (extra.negative_captions,
    # e.g. the lesion sides exchanged) as not matching, so the fusion has to check the caption's details
    itm_counterfactuals: bool = False
    # the image-text loss also sets each image's caption against its counterfactual twin (the same
    # record field), times counterfactual_weight; any stage with itgc
    itc_counterfactuals: bool = False
    counterfactual_weight: float = 1.0
    image_pooling: str = "cls"  # global image feature: cls (paper) | mean of all tokens | max over the patch tokens
    text_pooling: str = "cls"  # global text feature: cls (paper) | mean of the real tokens
    teacher: str = "caption"  # caption | <open_clip folder> | <CLIP model folder> | <cache .safetensors> | none
    teacher_trust_remote_code: bool = False  # for transformers folders shipped as remote code
    lam: float = 0.01  # the flexibility weight λ on each positive
    target_mode: str = "logit"  # logit (published code) | mixture
    label_smoothing: float = 0.1  # hard-label fallback (teacher: none)
    temperature_init: float = 0.07
    temperature_min: float = 0.01
    temperature_max: float = 0.5
    wpa_weight: float = 3.0
    ot_method: str = "ipot"  # ipot | sinkhorn
    ipot_beta: float = 0.5
    ipot_iters: int = 50
    sinkhorn_epsilon: float = 0.1
    sinkhorn_iters: int = 100
    hard_negative_mode: str = "sample"  # sample (softmax(sim/τ)) | most_similar
    hard_negative_temperature: float | None = None  # None: the current image-text temperature


def validate_losses(L: LossConfig) -> None:
    """Ranges and choices of a losses section (which losses a stage needs is checked with the run)."""
    if L.target_mode not in ("logit", "mixture"):
        raise ConfigError(f"config.losses.target_mode must be 'logit' or 'mixture', got {L.target_mode!r}")
    if L.target_mode == "mixture" and not 0.0 <= L.lam <= 1.0:
        raise ConfigError(f"config.losses.lam must lie in [0, 1] with target_mode mixture, got {L.lam}")
    if L.image_pooling not in ("cls", "mean", "max"):
        raise ConfigError(f"config.losses.image_pooling must be 'cls', 'mean' or 'max', got {L.image_pooling!r}")
    if L.text_pooling not in ("cls", "mean"):
        raise ConfigError(f"config.losses.text_pooling must be 'cls' or 'mean', got {L.text_pooling!r}")
    if L.ot_method not in ("ipot", "sinkhorn"):
        raise ConfigError(f"config.losses.ot_method must be 'ipot' or 'sinkhorn', got {L.ot_method!r}")
    if L.hard_negative_mode not in ("sample", "most_similar"):
        raise ConfigError("config.losses.hard_negative_mode must be 'sample' or 'most_similar', "
                          f"got {L.hard_negative_mode!r}")
    if not 0.0 < L.temperature_min <= L.temperature_init <= L.temperature_max:
        raise ConfigError("config.losses needs 0 < temperature_min <= temperature_init <= temperature_max")
    if L.hard_negative_temperature is not None and L.hard_negative_temperature <= 0:
        raise ConfigError("config.losses.hard_negative_temperature must be > 0 (or null)")
    if L.ipot_beta <= 0 or L.ipot_iters < 1 or L.sinkhorn_epsilon <= 0 or L.sinkhorn_iters < 1:
        raise ConfigError("config.losses needs ipot_beta > 0, ipot_iters >= 1, sinkhorn_epsilon > 0 and "
                          "sinkhorn_iters >= 1")
    if L.itc_counterfactuals and not L.itgc:
        raise ConfigError("config.losses.itc_counterfactuals extends itgc: switch itgc on or itc_counterfactuals off")
    if L.counterfactual_weight < 0:
        raise ConfigError(f"config.losses.counterfactual_weight must be >= 0, got {L.counterfactual_weight}")
    teacher = L.teacher.strip()
    if not teacher:
        raise ConfigError("config.losses.teacher is empty: use caption, none, a model folder or a cache file")
    if teacher.lower() not in ("caption", "minilm", "none") and not (
        teacher.endswith(".safetensors") or "/" in teacher or Path(teacher).is_dir()
    ):
        raise ConfigError(f"config.losses.teacher {teacher!r} is neither caption, none, a teacher cache "
                          "(.safetensors) nor a model folder path")
