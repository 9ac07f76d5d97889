"""Answer and question normalisation, exact-match scoring, answer candidates and the answer vocabulary.

The same :func:`normalize_answer` is applied to predictions and ground truth, so the rules only need
to be consistent. They are:

* Unicode NFKC, lower-case, strip;
* "x-ray", "x ray", "xray", "x-rays", "x rays", "xrays" -> "xray";
* apostrophes are deleted ("patient's" -> "patients", "isn't" -> "isnt");
* a "." between two digits is kept ("3.5"), a "," between digits is deleted ("1,000" -> "1000"),
  "%" is kept and attached to the number before it ("50 %" -> "50%");
* every other character that is not a letter or digit (hyphen, slash, brackets, quotes, other
  punctuation, underscore) becomes a space: "t1-weighted" -> "t1 weighted", "ct/mri" -> "ct mri";
* number words zero ... twenty -> digits ("two" -> "2");
* the articles a / an / the are dropped (unless the answer is nothing but articles, e.g. "a");
* a few contractions are expanded ("isnt" -> "is not", "dont" -> "do not", ...);
* whitespace is collapsed.

Unlike the VQA-v2 evaluation script used by the published code, "none" is **not** mapped to "0":
in medical VQA "none" is a real answer (e.g. "which organ is abnormal?" - "none").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "normalize_answer",
    "normalize_question",
    "exact_match",
    "is_yes_no",
    "answer_candidates",
    "answer_vocabulary",
    "NUMBER_WORDS",
]

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20",
}
_ARTICLES = frozenset({"a", "an", "the"})
_CONTRACTIONS = {
    "isnt": "is not", "arent": "are not", "wasnt": "was not", "werent": "were not",
    "doesnt": "does not", "dont": "do not", "didnt": "did not", "cant": "cannot",
    "couldnt": "could not", "shouldnt": "should not", "wouldnt": "would not", "wont": "will not",
    "hasnt": "has not", "havent": "have not", "hadnt": "had not",
}

_XRAY = re.compile(r"\bx[\s\-]*rays?\b")
_APOSTROPHES = re.compile(r"['\u2018\u2019`\u00b4]")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_KEEP_POINT = "\u0000"  # placeholder for a decimal point while other punctuation is removed
_NON_WORD = re.compile(r"[^\w%\u0000]|_")
_PERCENT_SPACE = re.compile(r"(?<=\d)\s+%")
_SPACES = re.compile(r"\s+")


def _clean(s: str) -> str:
    """Shared part of answer / question normalisation: case, x-ray, punctuation, whitespace."""
    if not isinstance(s, str):
        raise TypeError(f"expected a string, got {type(s).__name__}")
    s = unicodedata.normalize("NFKC", s).lower().strip()
    s = _XRAY.sub("xray", s)
    s = _APOSTROPHES.sub("", s)
    s = _THOUSANDS_COMMA.sub("", s)
    s = _DECIMAL_POINT.sub(_KEEP_POINT, s)
    s = _NON_WORD.sub(" ", s)
    s = s.replace(_KEEP_POINT, ".")
    s = _PERCENT_SPACE.sub("%", s)
    s = _XRAY.sub("xray", s)  # "x-(ray)" and the like, now that punctuation is gone
    return _SPACES.sub(" ", s).strip()


def normalize_answer(s: str) -> str:
    """Normalise an answer (prediction or ground truth) for exact matching; see the module docstring.

    "none" stays "none" (the VQA-v2 habit of mapping it to "0" is deliberately not followed).
    """
    tokens: list[str] = []
    for tok in _clean(s).split():
        tok = NUMBER_WORDS.get(tok, tok)
        tokens.extend(_CONTRACTIONS.get(tok, tok).split())
    kept = [t for t in tokens if t not in _ARTICLES]
    return " ".join(kept if kept else tokens)


def normalize_question(s: str) -> str:
    """Normalise a question for the text encoder.

    Lower-case, "x-ray" / "x ray" -> "xray", ">" / "<" -> "more than" / "less than", punctuation
    removed as in :func:`normalize_answer` (hyphens and slashes become spaces, apostrophes are
    deleted, decimal points kept), whitespace collapsed. Number words and articles are kept.
    Raises ``ValueError`` when nothing is left.
    """
    if not isinstance(s, str):
        raise TypeError(f"expected a string, got {type(s).__name__}")
    s = s.replace(">=", " more than or equal to ").replace("<=", " less than or equal to ")
    s = s.replace(">", " more than ").replace("<", " less than ")
    out = _clean(s)
    if not out:
        raise ValueError(f"empty question: {s!r}")
    return out


def exact_match(pred: str, truth: str) -> bool:
    """True when the normalised prediction equals the normalised ground truth."""
    return normalize_answer(pred) == normalize_answer(truth)


def is_yes_no(answer: str) -> bool:
    """True when the normalised answer is exactly "yes" or "no"."""
    return normalize_answer(answer) in ("yes", "no")


def answer_candidates(answers: Iterable[str]) -> list[str]:
    """Unique normalised answers in first-seen order (empty ones are skipped)."""
    seen: dict[str, None] = {}
    for a in answers:
        n = normalize_answer(a)
        if n:
            seen.setdefault(n, None)
    return list(seen)


def answer_vocabulary(answers: Iterable[str], max_words: int = 3000, mode: str = "vocab") -> list[str]:
    """The answer-vocabulary prior of the gated cross-attention.

    ``mode="vocab"``: the distinct words of the normalised answers, in first-seen order, with a true
    set-membership test (the published code's substring test dropped "no" once "normal" was in).
    ``mode="sentence"``: the distinct whole normalised answers. Both are capped at ``max_words``.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if mode == "sentence":
        return answer_candidates(answers)[:max_words]
    if mode != "vocab":
        raise ValueError(f"mode must be 'vocab' or 'sentence', got {mode!r}")
    words: dict[str, None] = {}
    for a in answers:
        for w in normalize_answer(a).split():
            if w not in words:
                words[w] = None
                if len(words) >= max_words:
                    return list(words)
    return list(words)
