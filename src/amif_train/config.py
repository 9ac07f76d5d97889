"""Experiment configs of the app: ``FinetuneConfig`` (``amif finetune``) and ``PretrainConfig``
(``amif pretrain``), their run sections, batch-size resolution and :func:`load_config`.

The run sections are siblings over :class:`RunConfig`, the loop settings both share: a key of one
kind of run in a file of the other is an unknown key. The model, data and loss sections come from
the library (:mod:`amif.models.config`, :mod:`amif.data.config`, :mod:`amif.losses.config`).
``docs/pretraining.md`` describes the pre-training keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from amif.configuration import apply_overrides, from_dict, read_yaml, resolve_arch
from amif.data.config import DataConfig, PretrainDataConfig, validate_data, validate_pretrain_data
from amif.errors import ConfigError
from amif.losses.config import LossConfig, validate_losses
from amif.models.config import ModelConfig, validate_model

__all__ = [
    "FinetuneConfig", "FinetuneRunConfig", "PretrainConfig", "PretrainRunConfig", "RunConfig", "count_devices",
    "load_config", "per_device_batch_size", "resolve_batch_size", "validate", "validate_batch", "validate_run",
]

T = TypeVar("T")


@dataclasses.dataclass
class RunConfig:
    """Loop settings that fine-tuning and pre-training share."""

    output_dir: str = "runs/vqa"
    seed: int = 42
    max_epochs: int = 50
    max_steps: int = -1
    batch_size: int = 24  # per device; derived from global_batch_size when that is set
    # samples per optimiser step over all devices (per-device batch x devices x accumulation). When set,
    # run.batch_size is derived from it at start-up, so one file runs on 1 GPU and, by overriding
    # run.devices, on several with the same optimisation (it must divide evenly)
    global_batch_size: int | None = None
    eval_batch_size: int = 32
    lr: float = 1.5e-5
    lr_new_modules: float | None = None  # optional separate LR for randomly initialised modules
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_fraction: float = 0.4
    min_lr: float = 1e-8
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    precision: str = "32-true"  # e.g. "16-mixed" / "bf16-mixed" on GPU
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"  # "ddp" for multi-GPU
    val_every_n_epochs: int = 1
    log_every_n_steps: int = 10
    init_from: str | None = None  # fine-tuning: a pre-training or model folder; pre-training: a previous stage's
    progress_bar: bool = True
    save_top_k: int = 1
    # also write checkpoints/last.ckpt every N optimizer steps (0: only at the end of every epoch), so a
    # killed run loses at most N steps; a resumed run continues bit-exactly (docs/reliability.md)
    checkpoint_every_n_steps: int = 0
    # recompute the encoders' and co-attention layers' activations in the backward pass instead of
    # keeping them: far less memory for about one more forward pass per step
    activation_checkpointing: bool = False


@dataclasses.dataclass
class FinetuneRunConfig(RunConfig):
    """Fine-tuning's run section: the shared keys plus encoder freezing and feature caching."""

    # keep the image encoder as initialised (no gradient, eval mode): a small dataset cannot overwrite
    # what pre-training put in it
    freeze_image_encoder: bool = False
    # the same for the question encoder; a frozen encoder's features can be cached (cache_frozen_features)
    freeze_text_encoder: bool = False
    # keep each frozen encoder's output per distinct image / question in memory, so it is computed
    # once per run, not once per step (same results). Needs deterministic inputs: no augmentation.
    cache_frozen_features: bool = False


@dataclasses.dataclass
class PretrainRunConfig(RunConfig):
    """Pre-training's run section: the shared keys (with pre-training defaults) plus the stage and what it trains."""

    output_dir: str = "runs/pretrain"
    max_epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 100
    lr: float = 4.0e-6
    weight_decay: float = 0.02
    stage: int = 0  # 0: global losses, encoders trained; >= 1: encoders frozen, + WPA and ITM
    # encoders trained in this stage, from {image, text}; null = the paper's schedule (both in stage 0,
    # neither in stage >= 1)
    train_encoders: list[str] | None = None
    # keep a frozen text encoder's output per caption in memory (encoded once, not every step); for
    # corpora whose token features fit in memory
    cache_text_features: bool = False
    val_check_interval: int | float | None = None  # Lightning: None = once per epoch
    # torch intra-op threads (None: torch's default); 1 avoids slow thread contention on small,
    # shared CPU machines
    cpu_threads: int | None = None


@dataclasses.dataclass
class FinetuneConfig:
    """An ``amif finetune`` file: ``model`` / ``data`` / ``run``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    run: FinetuneRunConfig = dataclasses.field(default_factory=FinetuneRunConfig)


@dataclasses.dataclass
class PretrainConfig:
    """An ``amif pretrain`` file: ``model`` / ``data`` / ``losses`` / ``run``. The model section is the
    VQA model's (its ``gca`` and ``decoder`` parts unused here), so a pre-trained folder loads into a VQA
    model of the same section."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: PretrainDataConfig = dataclasses.field(default_factory=PretrainDataConfig)
    losses: LossConfig = dataclasses.field(default_factory=LossConfig)
    run: PretrainRunConfig = dataclasses.field(default_factory=PretrainRunConfig)

    def __post_init__(self) -> None:
        validate_pretrain(self)


# --------------------------------------------------------------------------- loading

def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, cls: type[T] = FinetuneConfig
) -> T:
    """Load a YAML experiment file (or the defaults when ``path`` is None), apply ``section.key=value``
    overrides, resolve ``model.arch`` and check everything."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    if "model" in data:
        data["model"] = resolve_arch(data["model"])
    cfg = from_dict(cls, data, "config")
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------- batch sizes

def validate_batch(run: RunConfig) -> None:
    """Batch checks that need no device: sizes >= 1; a global batch divisible by an integer device count."""
    if run.batch_size < 1 or run.eval_batch_size < 1 or run.accumulate_grad_batches < 1:
        raise ConfigError("config.run.batch_size, eval_batch_size and accumulate_grad_batches must be >= 1")
    if run.global_batch_size is not None:
        if run.global_batch_size < 1:
            raise ConfigError(f"config.run.global_batch_size must be >= 1 (or null), got {run.global_batch_size}")
        if isinstance(run.devices, int) and not isinstance(run.devices, bool) and run.devices > 0:
            per_device_batch_size(run, run.devices)


def count_devices(run: RunConfig) -> int:
    """How many processes ``run.devices`` / ``run.accelerator`` start (Lightning's reading of them):
    an int N > 0 is N, a list is its length, ``-1`` / ``"auto"`` every visible GPU (1 on CPU)."""
    devices = run.devices
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    if devices in (-1, "auto"):
        import torch

        gpu = run.accelerator in ("gpu", "cuda") or (run.accelerator == "auto" and torch.cuda.is_available())
        return max(torch.cuda.device_count(), 1) if gpu else 1
    raise ConfigError(f"config.run.devices must be a positive integer, a list of device ids, -1 or 'auto', "
                      f"got {run.devices!r}")


def per_device_batch_size(run: RunConfig, n_devices: int, *, pretraining: bool = False) -> int:
    """``run.batch_size``, or ``run.global_batch_size / (n_devices x accumulate_grad_batches)`` when a
    global batch is set; a global batch that does not divide evenly is a :class:`ConfigError`.

    Pre-training's contrastive and hard-negative pool is the batch of one step over all devices, which
    gradient accumulation does not enlarge: there the global batch must be reached without it.
    """
    if run.global_batch_size is None:
        return run.batch_size
    accumulate = run.accumulate_grad_batches
    if pretraining and accumulate != 1:
        raise ConfigError(
            f"config.run.global_batch_size={run.global_batch_size} with accumulate_grad_batches={accumulate}: "
            "pre-training's negative pool is one step's batch over all devices, which accumulation does not "
            "enlarge; set run.accumulate_grad_batches=1 (or give run.batch_size without a global batch)")
    share = n_devices * accumulate
    if run.global_batch_size % share:
        raise ConfigError(
            f"config.run.global_batch_size={run.global_batch_size} is not divisible by {n_devices} device(s) x "
            f"accumulate_grad_batches={accumulate}; change one of them")
    return run.global_batch_size // share


def resolve_batch_size(cfg: T, *, pretraining: bool = False) -> T:
    """A copy of ``cfg`` whose ``run.batch_size`` is the per-device batch (see :func:`per_device_batch_size`)."""
    run = cfg.run  # type: ignore[attr-defined]
    size = per_device_batch_size(run, count_devices(run), pretraining=pretraining)
    return dataclasses.replace(cfg, run=dataclasses.replace(run, batch_size=size))


# --------------------------------------------------------------------------- checks

def validate_run(r: RunConfig) -> None:
    """Ranges of the loop settings that fine-tuning and pre-training share."""
    validate_batch(r)
    for key in ("val_every_n_epochs", "log_every_n_steps"):
        if getattr(r, key) < 1:
            raise ConfigError(f"config.run.{key} must be >= 1, got {getattr(r, key)}")
    if r.max_epochs < 1 and r.max_epochs != -1:
        raise ConfigError(f"config.run.max_epochs must be >= 1 (or -1 with run.max_steps), got {r.max_epochs}")
    if r.max_steps < 1 and r.max_steps != -1:
        raise ConfigError(f"config.run.max_steps must be >= 1 (or -1: no limit), got {r.max_steps}")
    for key in ("save_top_k", "checkpoint_every_n_steps"):
        if getattr(r, key) < 0:
            raise ConfigError(f"config.run.{key} must be >= 0, got {getattr(r, key)}")
    if not r.output_dir.strip():
        raise ConfigError("config.run.output_dir is empty")


def validate_finetune(cfg: FinetuneConfig) -> None:
    """Cross-field checks of a fine-tuning config."""
    validate_run(cfg.run)
    validate_data(cfg.data)
    validate_model(cfg.model)
    r = cfg.run
    if not 0.0 <= r.warmup_fraction < 1.0:
        raise ConfigError("config.run.warmup_fraction must lie in [0, 1)")
    if r.cache_frozen_features:
        if not (r.freeze_image_encoder or r.freeze_text_encoder):
            raise ConfigError("config.run.cache_frozen_features needs a frozen encoder "
                              "(run.freeze_image_encoder and/or run.freeze_text_encoder)")
        if r.freeze_image_encoder and cfg.data.augment.enabled:
            raise ConfigError("config.run.cache_frozen_features caches image features, which augmented "
                              "images would make unique every step: set data.augment.enabled: false")


def validate_pretrain(cfg: PretrainConfig) -> None:
    """Cross-field checks of a pre-training config (called on construction)."""
    L, r = cfg.losses, cfg.run
    validate_pretrain_data(cfg.data)
    validate_losses(L)
    if r.train_encoders is not None and not set(r.train_encoders) <= {"image", "text"}:
        raise ConfigError(f"config.run.train_encoders takes 'image' and/or 'text' (or null), got {r.train_encoders}")
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
    validate_model(cfg.model)


def validate(cfg: Any) -> None:
    """The checks of ``cfg``'s kind of config (any config with a shared run section gets :func:`validate_run`)."""
    if isinstance(cfg, FinetuneConfig):
        validate_finetune(cfg)
    elif hasattr(cfg, "run") and isinstance(cfg.run, RunConfig):
        validate_run(cfg.run)
