"""Soft-label teachers for pre-training, one module per backend, and their embedding cache.

- :class:`OpenCLIPTeacher` (:mod:`amif.teachers.open_clip`): an open_clip folder, BiomedCLIP as
  Microsoft releases it (the paper's teacher), built from torch + transformers modules.
- :class:`CLIPTeacher` (:mod:`amif.teachers.clip`): a CLIP-style model in a transformers folder.
- :class:`CaptionSimilarityTeacher` (:mod:`amif.teachers.caption`): the offline default, caption
  similarity from MiniLM; :class:`MemoCaptionTeacher` (:mod:`amif.teachers.memo`) memoises it per caption.
- :class:`CachedTeacher` / :func:`build_teacher_cache` (:mod:`amif.teachers.cache`): embeddings of
  whole corpora computed once, keyed by corpus and record id.

The interface (:class:`Teacher`) is in :mod:`amif.teachers.base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from amif.data.transforms import CLIP_MEAN, CLIP_STD
from amif.errors import CheckpointError, ConfigError
from amif.teachers.base import Teacher, TeacherEmbeddings
from amif.teachers.cache import CachedTeacher, build_teacher_cache, cache_index_path
from amif.teachers.caption import CaptionSimilarityTeacher
from amif.teachers.clip import CLIPTeacher
from amif.teachers.memo import MemoCaptionTeacher
from amif.teachers.open_clip import OPEN_CLIP_CONFIG, OpenCLIPTeacher, is_open_clip_folder

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIPTeacher",
    "CachedTeacher",
    "CaptionSimilarityTeacher",
    "MemoCaptionTeacher",
    "OpenCLIPTeacher",
    "Teacher",
    "TeacherEmbeddings",
    "build_teacher_cache",
    "cache_index_path",
    "load_teacher",
]

CAPTION_NAMES = ("caption", "minilm", "caption-minilm", "caption_minilm")


def load_teacher(spec: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Teacher:
    """A teacher from a spec: ``"caption"`` / ``"minilm"`` (the MiniLM caption teacher), a ``.safetensors``
    cache file (:class:`CachedTeacher`), an open_clip folder (``open_clip_config.json``: BiomedCLIP as
    released, :class:`OpenCLIPTeacher`) or a transformers folder (``config.json``: :class:`CLIPTeacher`)."""
    s = str(spec)
    if s.lower() in CAPTION_NAMES:
        return CaptionSimilarityTeacher.from_package(device, **kwargs)
    p = Path(s)
    if p.suffix == ".safetensors":
        return CachedTeacher.load(p, device)
    if p.is_dir() and is_open_clip_folder(p):
        kwargs.pop("trust_remote_code", None)  # built here from the config: no remote code involved
        return OpenCLIPTeacher.from_folder(p, device, **kwargs)
    if p.is_dir() and not (p / "config.json").is_file():
        raise CheckpointError(f"teacher folder {p} has neither {OPEN_CLIP_CONFIG} (an open_clip model such as "
                              "BiomedCLIP as released) nor config.json (a transformers model)")
    if p.is_dir():
        return CLIPTeacher.from_folder(p, device, **kwargs)
    raise ConfigError(f"teacher {s!r} is neither 'caption', a teacher cache (.safetensors) nor a model folder")
