"""Left-right mirrored copies of training records, with the horizontal axis's words swapped.

A record whose ``extra["axes"]["horizontal"]`` names the image axis that runs left to right ("lr",
"ap" or "ud", as the demo dataset writes it; ``None`` when no position axis is horizontal) can be
mirrored: the flipped image shows the same findings with the horizontal position reversed, so its
question and answer stay true once that axis's two words are swapped ("left" <-> "right" for "lr",
"anterior" <-> "posterior" for a sagittal image's "ap"). Records without that field are never
mirrored: nothing says what a flip would change in their answers (``data.mirror_train``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from amif.data.records import VQARecord

AXIS_WORDS = {"lr": ("left", "right"), "ap": ("anterior", "posterior"), "ud": ("upper", "lower")}
MIRROR_SUFFIX = "#mirror"


def horizontal_axis(record: VQARecord) -> str | None:
    """The position axis that runs along the image's width, ``""`` when none does, ``None`` when the
    record does not say (then it cannot be mirrored)."""
    axes = record.extra.get("axes") if isinstance(record.extra, dict) else None
    if not isinstance(axes, dict) or "horizontal" not in axes:
        return None
    axis = axes["horizontal"]
    if axis is not None and axis not in AXIS_WORDS:
        raise ValueError(f"unknown horizontal axis {axis!r}")
    return axis or ""


def swap_words(text: str, axis: str) -> str:
    """``text`` with the two words of ``axis`` exchanged (whole words, case kept for a capital first
    letter); unchanged for ``axis`` ``""``."""
    if not axis:
        return text
    a, b = AXIS_WORDS[axis]
    other = {a: b, b: a}

    def repl(m: re.Match[str]) -> str:
        word = m.group(0)
        new = other[word.lower()]
        return new.capitalize() if word[0].isupper() else new

    return re.sub(rf"\b({a}|{b})\b", repl, text, flags=re.IGNORECASE)


def mirror_record(record: VQARecord) -> VQARecord | None:
    """The mirrored copy of ``record`` (qid + ``#mirror``), or ``None`` when it cannot be mirrored."""
    axis = horizontal_axis(record)
    if axis is None:
        return None
    return dataclasses.replace(
        record, qid=record.qid + MIRROR_SUFFIX, question=swap_words(record.question, axis),
        answer=swap_words(record.answer, axis), extra={**record.extra, "mirrored": True},
    )


def with_mirrored_copies(records: Sequence[VQARecord]) -> tuple[list[VQARecord], list[bool]]:
    """``records`` followed by the mirrored copy of each one that can be mirrored, and per returned
    record whether its image is to be flipped."""
    copies = [m for m in (mirror_record(r) for r in records) if m is not None]
    return list(records) + copies, [False] * len(records) + [True] * len(copies)
