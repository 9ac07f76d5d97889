"""How far a rule that never sees where a lesion is gets on the demo's position questions.

The rule learns, on the training split, the most frequent answer of each (source, plane, question
axis, asked side of a closed question, lesion intensity) and answers test position questions with it (ties
and unseen keys: the alphabetically first answer of the question's form). On a build whose
attributes are balanced per source and plane it stays at chance (50 %); on a build where side and
brightness are correlated it does not.

    python benchmarks/position_shortcut.py --data runs/demo/data
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

from amif.data.records import load_split

_SIDES = r"\b(left|right|upper|lower|anterior|posterior)\b"


def _key(r) -> tuple:
    q = r.question.lower()
    axis = "ap" if ("anterior" in q or "posterior" in q) else "ud" if ("upper" in q or "lower" in q) else "lr"
    asked = re.search(_SIDES, q).group(1) if r.answer_type == "CLOSED" else ""
    return r.extra["source"], r.extra["plane"], axis, asked, r.extra["lesions"][0]["intensity"]


def _score(votes: dict[tuple, Counter], records) -> tuple[float, int]:
    hits = n = 0
    for r in records:
        if r.question_type != "position":
            continue
        c = votes.get(_key(r))
        guess = min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] if c else ("no" if r.answer_type == "CLOSED" else "")
        hits += guess == r.answer
        n += 1
    return hits / max(n, 1), n


def shortcut_accuracy(data: str) -> dict[str, tuple[float, int]]:
    """The rule's accuracy and question count on the training split (where it was fitted: how much
    the attributes tell about the side there) and on the test split."""
    train = load_split(data, "train")
    votes: dict[tuple, Counter] = defaultdict(Counter)
    for r in train:
        if r.question_type == "position":
            votes[_key(r)][r.answer] += 1
    return {"train": _score(votes, train), "test": _score(votes, load_split(data, "test"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, action="append", help="demo dataset folder (repeatable)")
    for d in p.parse_args().data:
        res = shortcut_accuracy(d)
        print(f"{d}: " + ", ".join(f"{split} {100 * acc:.1f} % of {n}" for split, (acc, n) in res.items()))


if __name__ == "__main__":
    main()
