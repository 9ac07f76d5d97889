"""Evaluation protocols: which answers form the GCA vocabulary and the ranking candidates.

``clean`` (default): the vocabulary comes from the training answers (plus validation answers when
validation is folded into training), the candidates from train + validation answers. Nothing from
the test split is used before the final evaluation.

``paper``: as the published AMiF code: vocabulary from train + test answers, candidates from the
test answers. Test answers leak into the model, so results under this protocol are labelled as
such everywhere; use it only to compare with published numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amif.answers import answer_candidates, answer_vocabulary
from amif.data.records import VQARecord

PROTOCOLS = ("clean", "paper")


@dataclass
class AnswerLists:
    protocol: str
    candidates: list[str]
    vocabulary: list[str]
    description: str


def build_answer_lists(
    train: Sequence[VQARecord],
    val: Sequence[VQARecord],
    test: Sequence[VQARecord],
    *,
    protocol: str = "clean",
    prior_mode: str = "vocab",
    max_prior_length: int = 3000,
    train_on_val: bool = False,
) -> AnswerLists:
    """Candidates and GCA vocabulary for ``protocol`` (see module docstring)."""
    answers = {name: [r.answer for r in recs] for name, recs in (("train", train), ("val", val), ("test", test))}
    if protocol == "clean":
        vocab_src = answers["train"] + (answers["val"] if train_on_val else [])
        cand_src = answers["train"] + answers["val"]
        desc = (
            "clean: vocabulary from train" + (" + val" if train_on_val else "")
            + " answers, candidates from train + val answers; test answers unused until evaluation"
        )
    elif protocol == "paper":
        vocab_src = answers["train"] + answers["test"]
        cand_src = answers["test"]
        desc = "paper (LEAKY): vocabulary from train + test answers, candidates from test answers, as the published code"
    else:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    return AnswerLists(
        protocol=protocol,
        candidates=answer_candidates(cand_src),
        vocabulary=answer_vocabulary(vocab_src, max_words=max_prior_length, mode=prior_mode),
        description=desc,
    )
