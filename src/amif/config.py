"""Typed experiment configuration: YAML files with ``model`` / ``data`` / ``run`` sections.

A YAML file is read into nested dataclasses. Every key is checked: an unknown key is an error that
names it and lists the valid ones, and a value of the wrong type is an error too. A file may start
from another one with ``_base_: other.yaml`` (path relative to the file). Any key can be overridden
from the command line as ``section.key=value`` (the value is parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from amif.errors import ConfigError

T = TypeVar("T")


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
    # "patch": CLIP's patchify convolution (the paper). "conv": a convolutional stem (3x3 conv +
    # BatchNorm + ReLU + 2x2 max-pool blocks down to patch_size, then a 1x1 conv) for
    # encoders trained from scratch: a randomly initialised ViT with the patch stem does not learn the
    # demo's lesions from a few thousand images (docs/demo.md). Random initialisation only.
    stem: str = "patch"
    # Start of the learned position embeddings of a randomly initialised encoder. "random": CLIP's
    # N(0, 0.02). "sincos": fixed-frequency 2-D sine-cosine values (as MAE / MoCo v3 use for ViTs
    # trained from scratch), still learned afterwards. With "random" the table stays ~25x smaller
    # than the conv stem's patch features through the demo's pre-training; "sincos" did not improve
    # the demo's position answers, though (docs/demo.md item 10). Random initialisation only.
    position_init: str = "random"


@dataclasses.dataclass
class TextEncoderConfig:
    """BERT-family question encoder loaded from a local folder (``minilm`` = the packaged MiniLM)."""

    path: str = "minilm"
    pretrained: bool = True  # False: same architecture from the folder's config, random weights
    num_layers: int | None = None  # keep only the first N layers (None: all)
    max_length: int = 30
    # keep the word-embedding matrices (question encoder and the decoder's tied copy) fixed: for small
    # data, and ~25 % less time per step with a 30k-word vocabulary on CPU (docs/demo.md)
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
    # (Glorot-uniform projections: a short run from scratch learns question-image interactions sooner,
    # docs/demo.md); the feed-forward layers keep N(0, 0.02) either way
    attention_init: str = "bert"


@dataclasses.dataclass
class GCAConfig:
    """Gated cross-attention over the answer vocabulary (spec 1.4)."""

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
    # tokens of the candidate answers (training and ranking; ~10x faster ranking on CPU, and the
    # softmax need not first learn to push 30k never-used tokens down); answers outside the
    # candidate list cannot be generated then
    output_vocabulary: str = "full"


@dataclasses.dataclass
class ModelConfig:
    image_encoder: ImageEncoderConfig = dataclasses.field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = dataclasses.field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    gca: GCAConfig = dataclasses.field(default_factory=GCAConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)


@dataclasses.dataclass
class AugmentConfig:
    """Training augmentation (spec 3.3): random resized crop + RandAugment; test transform is a resize."""

    enabled: bool = True
    scale: tuple[float, float] = (0.6, 1.0)
    randaug_n: int = 2
    randaug_m: int = 7
    randaug_p: float = 0.8
    hflip: bool = False  # off: left/right answers depend on orientation


@dataclasses.dataclass
class DataConfig:
    root: str = ""  # prepared dataset folder (train.jsonl, val.jsonl, test.jsonl, images/)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    protocol: str = "clean"  # "clean" (train+val vocabulary) or "paper" (leaky, as published code)
    train_on_val: bool = False  # clean protocol only: fold val into training (no model selection then)
    blank_images: bool = False  # question-only baseline: every image is replaced by a blank one
    # add a left-right mirrored copy of every training record whose extra.axes names its horizontal
    # axis, with that axis's words swapped in question and answer (amif.data.mirror)
    mirror_train: bool = False
    num_workers: int = 0
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


@dataclasses.dataclass
class RunConfig:
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
    init_from: str | None = None  # pre-training checkpoint or saved model folder
    # keep the image encoder as initialised (no gradient, eval mode): a small dataset cannot overwrite
    # what pre-training put in it (the demo: lesion features, docs/demo.md). Fine-tuning only.
    freeze_image_encoder: bool = False
    # the same for the question encoder: the demo's pre-training locks it, and a frozen encoder's
    # features can be cached (``cache_frozen_features``). Fine-tuning only.
    freeze_text_encoder: bool = False
    # keep each frozen encoder's output per distinct image / question in memory, so it is computed
    # once per run, not once per step (same results). Needs deterministic inputs: no augmentation.
    cache_frozen_features: bool = False
    progress_bar: bool = True
    save_top_k: int = 1
    # also write checkpoints/last.ckpt every N optimizer steps (0: only at the end of every epoch), so a
    # killed run loses at most N steps; a resumed run continues bit-exactly (docs/reliability.md)
    checkpoint_every_n_steps: int = 0
    # recompute the encoders' and co-attention layers' activations in the backward pass instead of
    # keeping them: far less memory for about one more forward pass per step (the paper's 256-pair
    # pre-training batch on one GPU, configs/paper)
    activation_checkpointing: bool = False


@dataclasses.dataclass
class ExperimentConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


# --------------------------------------------------------------------------- generic machinery

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting lists to tuples, ints to floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; valid keys of {where} are: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-Python (YAML-safe) form of a config dataclass; tuples become lists."""

    def conv(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(cfg))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config, following ``_base_`` references (relative to the including file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("_base_", None)
    if base is not None:
        data = _deep_merge(read_yaml(path.parent / base), data)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict."""
    data = _deep_merge({}, data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, cls: type[T] = ExperimentConfig
) -> T:
    """Load a YAML experiment file (or the defaults when ``path`` is None) and apply overrides."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    cfg = from_dict(cls, data, "config")
    validate(cfg)
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def _choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"config.{where} must be {' or '.join(repr(x) for x in allowed)}, got {value!r}")


def validate_model(m: ModelConfig) -> None:
    """Cross-field checks of a model section (fine-tuning and pre-training configs share it)."""
    _choice(m.gca.prior_mode, ("vocab", "sentence"), "model.gca.prior_mode")
    _choice(m.image_encoder.stem, ("patch", "conv"), "model.image_encoder.stem")
    _choice(m.image_encoder.position_init, ("random", "sincos"), "model.image_encoder.position_init")
    _choice(m.decoder.output_vocabulary, ("full", "answers"), "model.decoder.output_vocabulary")
    _choice(m.decoder.cross_attention_init, ("xavier", "bert"), "model.decoder.cross_attention_init")
    _choice(m.fusion.attention_init, ("bert", "xavier"), "model.fusion.attention_init")
    _choice(m.gca.attention_init, ("bert", "xavier"), "model.gca.attention_init")
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


def validate(cfg: Any) -> None:
    """Cross-field checks that types alone cannot express."""
    if hasattr(cfg, "run") and isinstance(cfg.run, RunConfig):
        validate_run(cfg.run)
    if isinstance(cfg, ExperimentConfig):
        _choice(cfg.data.protocol, ("clean", "paper"), "data.protocol")
        validate_model(cfg.model)
        if not 0.0 <= cfg.run.warmup_fraction < 1.0:
            raise ConfigError("config.run.warmup_fraction must lie in [0, 1)")
        if cfg.run.cache_frozen_features:
            if not (cfg.run.freeze_image_encoder or cfg.run.freeze_text_encoder):
                raise ConfigError("config.run.cache_frozen_features needs a frozen encoder "
                                  "(run.freeze_image_encoder and/or run.freeze_text_encoder)")
            if cfg.run.freeze_image_encoder and cfg.data.augment.enabled:
                raise ConfigError("config.run.cache_frozen_features caches image features, which augmented "
                                  "images would make unique every step: set data.augment.enabled: false")


__all__ = [name for name in dir() if name.endswith("Config")] + [
    "from_dict", "to_dict", "load_config", "save_config", "read_yaml", "apply_overrides", "validate",
    "validate_run",
    "validate_model", "validate_batch", "count_devices", "per_device_batch_size", "resolve_batch_size",
]
