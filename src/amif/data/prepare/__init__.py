"""Converters of the official VQA-RAD, SLAKE, PathVQA and VQA-Med-2019 distributions into amif's format.

Each converter reads the layout the dataset authors publish, validates every row (a malformed one raises
:class:`~amif.errors.DataError` naming the file and row, or is skipped *and listed* with ``skip_bad=True``),
copies or hard-links the images into ``OUT/images/``, and writes ``OUT/{train,val,test}.jsonl``,
``OUT/README.md`` (origin, licence, citation, options, counts) and ``OUT/prepare.json`` (the summary).

    >>> from amif.data.prepare import prepare_dataset
    >>> summary = prepare_dataset("vqa-rad", "downloads/VQA_RAD", "data/vqa_rad", val_fraction=0.1)

See ``docs/datasets.md`` for downloads, layouts and the caveats of each dataset.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amif.data.prepare.common import format_summary
from amif.data.prepare.pathvqa import prepare_pathvqa
from amif.data.prepare.slake import prepare_slake
from amif.data.prepare.vqa_med_2019 import prepare_vqa_med_2019
from amif.data.prepare.vqa_rad import prepare_vqa_rad
from amif.errors import ConfigError

PREPARERS: dict[str, Callable[..., dict[str, Any]]] = {
    "vqa-rad": prepare_vqa_rad,
    "slake": prepare_slake,
    "pathvqa": prepare_pathvqa,
    "vqa-med-2019": prepare_vqa_med_2019,
}

_ALIASES = {
    "vqarad": "vqa-rad", "rad": "vqa-rad", "radvqa": "vqa-rad",
    "slake-en": "slake",
    "path-vqa": "pathvqa", "pvqa": "pathvqa",
    "vqamed2019": "vqa-med-2019", "vqa-med2019": "vqa-med-2019", "vqa2019": "vqa-med-2019",
    "vqa-med": "vqa-med-2019", "vqamed": "vqa-med-2019",
}


def canonical_name(name: str) -> str:
    """``"VQA_RAD"`` -> ``"vqa-rad"``; raises :class:`ConfigError` for an unknown dataset."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in PREPARERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(PREPARERS)}")
    return key


def preparer_options(name: str) -> dict[str, Any]:
    """The options a converter accepts, with their defaults (for the CLI's help and validation)."""
    sig = inspect.signature(PREPARERS[canonical_name(name)])
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def prepare_dataset(name: str, src: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Convert the official distribution of dataset ``name`` found in ``src`` into ``out``.

    Options common to all datasets: ``skip_bad`` (skip and list malformed rows instead of failing),
    ``link`` (hard-link images when possible instead of copying; default True), ``overwrite`` (replace a
    folder written by an earlier conversion). Dataset options: vqa-rad ``layout``, ``val_fraction``,
    ``seed``; slake ``languages``; vqa-med-2019 ``categories``. Returns the summary dict (counts per split
    and answer type, options, skipped rows, notes), also written to ``out/prepare.json``.
    """
    key = canonical_name(name)
    allowed = preparer_options(key)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for dataset {key!r}; it accepts {sorted(allowed)}")
    return PREPARERS[key](src, out, **options)


__all__ = ["PREPARERS", "canonical_name", "format_summary", "preparer_options", "prepare_dataset"]
