"""Caption cleaning for image-caption pre-training.

The rule follows the AMiF pre-training data pipeline: lower-case, drop a fixed set of punctuation marks,
turn hyphens and slashes into spaces, map the ``<person>`` anonymisation tag to ``person``, collapse
whitespace and keep at most ``max_words`` words. The cleaned caption is what both the student text
encoder and the soft-label teacher see.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_WORDS", "clean_caption"]

DEFAULT_MAX_WORDS = 200

# Characters deleted outright (the `<person>` tag is handled before, so its brackets survive this step).
_DELETE = re.compile(r"[_,.'!?\"()*#:;~]")
_TO_SPACE = re.compile(r"[-/]")
_PERSON = re.compile(r"<\s*person\s*>")
_SPACES = re.compile(r"\s+")


def clean_caption(text: str, max_words: int = DEFAULT_MAX_WORDS) -> str:
    """Normalise one caption; raise ``ValueError`` when nothing is left.

    Steps: lower-case; ``<person>`` -> ``person``; delete ``_ , . ' ! ? " ( ) * # : ; ~``; ``-`` and
    ``/`` become spaces; runs of whitespace (newlines and tabs included) become one space; leading and
    trailing spaces are dropped; only the first ``max_words`` words are kept.

    The ``ValueError`` (empty caption, or not a string) is meant to be turned by the caller into a
    :class:`~amif.errors.DataError` naming the file and the row.
    """
    if not isinstance(text, str):
        raise ValueError(f"caption must be a string, got {type(text).__name__}")
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    t = text.lower()
    t = _PERSON.sub("person", t)
    t = _DELETE.sub("", t)
    t = _TO_SPACE.sub(" ", t)
    words = _SPACES.sub(" ", t).strip().split(" ")
    t = " ".join(words[:max_words]).strip()
    if not t:
        raise ValueError(f"caption is empty after cleaning (was {text[:60]!r})")
    return t
