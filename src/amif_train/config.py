"""Typed configuration of AMiF pre-training: ``model`` / ``data`` / ``losses`` / ``run`` sections.

Loaded like every amif experiment file, with :func:`amif.config.load_config`::

    cfg = load_config("configs/demo/pretrain_stage0.yaml", ["data.root=/tmp/demo"], cls=PretrainConfig)

The ``model`` section is the VQA model's :class:`~amif.config.ModelConfig` (its ``gca`` and ``decoder``
parts are unused here), so a pre-trained folder loads into a VQA model of the same ``model`` section.
See ``docs/pretraining.md`` for what every key does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from amif.config import ModelConfig, RunConfig, per_device_batch_size, validate_batch, validate_model
from amif.errors import ConfigError

__all__ = [
    "CORPUS_KINDS",
    "CorpusConfig",
    "LossConfig",
    "PretrainAugmentConfig",
    "PretrainConfig",
    "PretrainDataConfig",
    "PretrainRunConfig",
    "validate_pretrain",
]

CORPUS_KINDS = ("roco", "medicat", "mimic_cxr", "mimic", "pmc_oa", "captions")


@dataclasses.dataclass
class CorpusConfig:
    """One image-caption corpus read by :func:`amif.data.pretrain_corpora.read_corpus`.

    ``root`` empty means ``data.root``. ``name`` (default: ``kind``) keys the corpus's rows in a teacher
    cache and its study ids in the hard-negative exclusion; corpora of one run need distinct names.
    ``options`` go to the reader (e.g. ``csv_name``, ``image_dir``,
    ``abs_prefix``, ``max_rows``); ``split`` selects ``captions_{split}.jsonl`` for ``kind: captions``
    and is the record split label for the other readers.
    """

    kind: str = "captions"
    name: str = ""
    root: str = ""
    split: str = "train"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PretrainAugmentConfig:
    """Student augmentation of pre-training (spec 2.1); ``enabled: false`` is a plain resize."""

    enabled: bool = True
    scale: tuple[float, float] = (0.7, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.6
    grayscale_p: float = 0.1
    randaug_n: int = 2
    randaug_m: float = 4.0
    randaug_p: float = 0.8
    blur_p: float = 0.3
    hflip_p: float = 0.5  # set 0 when captions mention left/right (the demo)
    translate: float = 0.0  # > 0: shift every image by up to this fraction of its side (black fill)


@dataclasses.dataclass
class PretrainDataConfig:
    root: str = ""  # default root of the corpora whose own root is empty
    corpora: list[CorpusConfig] = dataclasses.field(default_factory=lambda: [CorpusConfig()])
    val: CorpusConfig | None = dataclasses.field(default_factory=lambda: CorpusConfig(split="val"))
    skip_bad: bool = False  # skip (and count) bad rows instead of stopping at the first
    validate_images: bool | None = None  # open every image before training; None: only with skip_bad
    multi_view: bool = True  # studies with several images give pairs of different views
    max_caption_words: int = 200
    max_caption_tokens: int = 120
    num_workers: int = 0
    augment: PretrainAugmentConfig = dataclasses.field(default_factory=PretrainAugmentConfig)


@dataclasses.dataclass
class LossConfig:
    """Which losses run and their parameters (spec 2.3, choices of spec 6)."""

    itgc: bool = True  # image-text global contrastive
    imvc: bool = True  # image view 1 - view 2 contrastive
    utgc: bool = True  # text-text relational distillation
    wpa: bool = True  # optimal-transport word-patch alignment (stage >= 1)
    itm: bool = True  # image-text matching with hard negatives (stage >= 1)
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


@dataclasses.dataclass
class PretrainRunConfig(RunConfig):
    """Training loop settings: the fine-tuning :class:`RunConfig` keys plus ``stage``."""

    output_dir: str = "runs/pretrain"
    stage: int = 0  # 0: global losses, encoders trained; >= 1: encoders frozen, + WPA and ITM
    # encoders trained in this stage, from {image, text}; null = the paper's schedule (both in stage 0,
    # neither in stage >= 1). The demo's stage 0 trains only its random image encoder (docs/demo.md).
    train_encoders: list[str] | None = None
    # keep a frozen text encoder's output per caption in memory (encoded once, not every step); for
    # corpora whose token features fit in memory (the demo: ~70 MB)
    cache_text_features: bool = False
    max_epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 100
    lr: float = 4.0e-6
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_fraction: float = 0.4
    init_from: str | None = None  # a previous stage's model folder (OUTPUT/model)
    val_check_interval: int | float | None = None  # Lightning: None = once per epoch
    log_every_n_steps: int = 10
    cpu_threads: int | None = None  # torch intra-op threads (None: torch's default); 1 avoids slow
    # thread contention on small, shared CPU machines


@dataclasses.dataclass
class PretrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: PretrainDataConfig = dataclasses.field(default_factory=PretrainDataConfig)
    losses: LossConfig = dataclasses.field(default_factory=LossConfig)
    run: PretrainRunConfig = dataclasses.field(default_factory=PretrainRunConfig)

    def __post_init__(self) -> None:
        validate_pretrain(self)


def _check_corpus(c: CorpusConfig, where: str) -> None:
    if c.kind.lower().replace("-", "_") not in CORPUS_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(CORPUS_KINDS)}, got {c.kind!r}")
    if not isinstance(c.options, dict):
        raise ConfigError(f"{where}.options must be a mapping of reader options, got {c.options!r}")
    bad = {"root", "skip_bad", "max_words"} & set(c.options)
    if bad:
        raise ConfigError(f"{where}.options must not set {', '.join(sorted(bad))} (use the config keys)")


def validate_pretrain(cfg: PretrainConfig) -> None:
    """Cross-field checks of a pre-training config (called on construction)."""
    L, r, d = cfg.losses, cfg.run, cfg.data
    if not d.corpora:
        raise ConfigError("config.data.corpora is empty: give at least one training corpus")
    for i, c in enumerate(d.corpora):
        _check_corpus(c, f"config.data.corpora[{i}]")
    if d.val is not None:
        _check_corpus(d.val, "config.data.val")
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
    for key in ("freeze_image_encoder", "freeze_text_encoder", "cache_frozen_features"):
        if getattr(r, key):
            raise ConfigError(f"config.run.{key} is a fine-tuning key; pre-training chooses the trained "
                              "encoders with run.train_encoders (and caches text with run.cache_text_features)")
    if r.train_encoders is not None and not set(r.train_encoders) <= {"image", "text"}:
        raise ConfigError(f"config.run.train_encoders takes 'image' and/or 'text' (or null), got {r.train_encoders}")
    teacher = L.teacher.strip()
    if not teacher:
        raise ConfigError("config.losses.teacher is empty: use caption, none, a model folder or a cache file")
    if teacher.lower() not in ("caption", "minilm", "none") and not (
        teacher.endswith(".safetensors") or "/" in teacher or Path(teacher).is_dir()
    ):
        raise ConfigError(f"config.losses.teacher {teacher!r} is neither caption, none, a teacher cache "
                          "(.safetensors) nor a model folder path")
    if r.stage < 0:
        raise ConfigError(f"config.run.stage must be 0 or 1, got {r.stage}")
    global_on = L.itgc or L.imvc or L.utgc
    if r.stage == 0 and not global_on:
        raise ConfigError("stage 0 trains only the global losses: enable at least one of itgc, imvc, utgc")
    if r.stage >= 1 and not (global_on or L.wpa or L.itm):
        raise ConfigError("every loss is switched off")
    if not 0.0 <= r.warmup_fraction < 1.0:
        raise ConfigError("config.run.warmup_fraction must lie in [0, 1)")
    if r.cpu_threads is not None and r.cpu_threads < 1:
        raise ConfigError("config.run.cpu_threads must be >= 1 (or null)")
    validate_batch(r)
    if r.global_batch_size is not None and isinstance(r.devices, int) and r.devices > 0:
        per_device_batch_size(r, r.devices, pretraining=True)
    if d.max_caption_tokens < 3:
        raise ConfigError("config.data.max_caption_tokens must be >= 3 ([CLS], a word, [SEP])")
    validate_model(cfg.model)
