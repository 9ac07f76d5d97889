"""The data sections of experiment files: VQA datasets (fine-tuning) and caption corpora (pre-training)."""

from __future__ import annotations

import dataclasses
from typing import Any

from amif.configuration import check_choice
from amif.errors import ConfigError

__all__ = [
    "CORPUS_KINDS", "AugmentConfig", "CorpusConfig", "DataConfig", "PretrainAugmentConfig", "PretrainDataConfig",
    "validate_data", "validate_pretrain_data",
]

CORPUS_KINDS = ("roco", "medicat", "mimic_cxr", "mimic", "pmc_oa", "captions")


@dataclasses.dataclass
class AugmentConfig:
    """Fine-tuning augmentation: random resized crop + RandAugment; the test transform is a resize."""

    enabled: bool = True
    scale: tuple[float, float] = (0.6, 1.0)
    randaug_n: int = 2
    randaug_m: int = 7
    randaug_p: float = 0.8
    hflip: bool = False  # off: left/right answers depend on orientation


@dataclasses.dataclass
class DataConfig:
    """A prepared VQA dataset (``amif data prepare``) and how it is read."""

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
class CorpusConfig:
    """One image-caption corpus read by :func:`amif.data.pretrain_corpora.read_corpus`.

    ``root`` empty means ``data.root``. ``name`` (default: ``kind``) keys the corpus's rows in a teacher
    cache and its study ids in the hard-negative exclusion; corpora of one run need distinct names.
    ``options`` go to the reader (e.g. ``csv_name``, ``image_dir``, ``abs_prefix``, ``max_rows``);
    ``split`` selects ``captions_{split}.jsonl`` for ``kind: captions`` and is the record split label
    for the other readers.
    """

    kind: str = "captions"
    name: str = ""
    root: str = ""
    split: str = "train"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PretrainAugmentConfig:
    """Student augmentation of pre-training; ``enabled: false`` is a plain resize."""

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
    """The caption corpora of pre-training and how they are read."""

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


def validate_data(d: DataConfig) -> None:
    """Cross-field checks of a fine-tuning data section."""
    check_choice(d.protocol, ("clean", "paper"), "data.protocol")


def _check_corpus(c: CorpusConfig, where: str) -> None:
    if c.kind.lower().replace("-", "_") not in CORPUS_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(CORPUS_KINDS)}, got {c.kind!r}")
    if not isinstance(c.options, dict):
        raise ConfigError(f"{where}.options must be a mapping of reader options, got {c.options!r}")
    bad = {"root", "skip_bad", "max_words"} & set(c.options)
    if bad:
        raise ConfigError(f"{where}.options must not set {', '.join(sorted(bad))} (use the config keys)")


def validate_pretrain_data(d: PretrainDataConfig) -> None:
    """Cross-field checks of a pre-training data section."""
    if not d.corpora:
        raise ConfigError("config.data.corpora is empty: give at least one training corpus")
    for i, c in enumerate(d.corpora):
        _check_corpus(c, f"config.data.corpora[{i}]")
    if d.val is not None:
        _check_corpus(d.val, "config.data.val")
    if d.max_caption_tokens < 3:
        raise ConfigError("config.data.max_caption_tokens must be >= 3 ([CLS], a word, [SEP])")
