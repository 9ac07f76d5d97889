"""Answer / question normalisation, exact match, candidates and the answer vocabulary."""

from __future__ import annotations

import pytest

from amif.answers import (
    answer_candidates,
    answer_vocabulary,
    exact_match,
    is_yes_no,
    normalize_answer,
    normalize_question,
)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("X-Ray", "xray"),
        ("x ray", "xray"),
        ("xray", "xray"),
        ("X-rays", "xray"),
        ("Chest x rays", "chest xray"),
        ("The left lung.", "left lung"),
        ("Two", "2"),
        ("twenty", "20"),
        ("T1-weighted", "t1 weighted"),
        ("CT/MRI", "ct mri"),
        ("none", "none"),  # NOT "0"
        ("no", "no"),
        ("normal", "normal"),
        ("  Yes.  ", "yes"),
        ("Isn't", "is not"),
        ("the patient's heart", "patients heart"),
        ("3.5 cm", "3.5 cm"),
        ("1,000", "1000"),
        ("50 %", "50%"),
        ("(right) kidney!", "right kidney"),
        ("a", "a"),  # only an article: kept rather than emptied
        ("An axial plane", "axial plane"),
        ("right_lobe", "right lobe"),
        ("\uff34\uff12", "t2"),  # full-width characters
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalize_answer_is_idempotent():
    for s in ["X-Ray of the chest", "T1-weighted", "Two lesions.", "3.5 cm", "isn't it", "50 %"]:
        once = normalize_answer(s)
        assert normalize_answer(once) == once


def test_exact_match_and_yes_no():
    assert exact_match("X-Ray", "xray")
    assert exact_match("The left lung.", "left lung")
    assert exact_match("two", "2")
    assert exact_match("T1 weighted", "T1-weighted")
    assert not exact_match("none", "0")
    assert not exact_match("no", "normal")
    assert not exact_match("3.5", "35")
    assert is_yes_no("Yes.") and is_yes_no(" NO ")
    assert not is_yes_no("normal") and not is_yes_no("yes, left") and not is_yes_no("none")


def test_normalize_question():
    assert normalize_question("Is this an X-Ray?") == "is this an xray"
    assert normalize_question("Is the x ray  taken  PA?") == "is the xray taken pa"
    assert normalize_question("Is the lesion > 5 cm?") == "is the lesion more than 5 cm"
    assert normalize_question("How many (two?) lesions; are there") == "how many two lesions are there"
    assert normalize_question("Which side is T1-weighted?") == "which side is t1 weighted"
    for bad in ("", "   ", "?!"):
        with pytest.raises(ValueError):
            normalize_question(bad)


def test_answer_candidates_unique_first_seen():
    answers = ["Yes", "no", "yes.", "X-Ray", "xray", "The liver", "liver", "", "No"]
    assert answer_candidates(answers) == ["yes", "no", "xray", "liver"]


def test_vocabulary_is_a_real_set_short_words_survive():
    answers = ["normal", "no", "near", "ear", "heart", "the ear", "Left ear", "yes"]
    vocab = answer_vocabulary(answers)
    # a substring test would drop "no" (in "normal") and "ear" (in "near" / "heart")
    assert vocab == ["normal", "no", "near", "ear", "heart", "left", "yes"]
    assert len(vocab) == len(set(vocab))


def test_vocabulary_cap_and_modes():
    answers = [f"word{i} shared" for i in range(50)]
    vocab = answer_vocabulary(answers, max_words=10)
    assert vocab == ["word0", "shared"] + [f"word{i}" for i in range(1, 9)]
    sent = answer_vocabulary(["Left lung", "left lung.", "Right lung", "heart"], max_words=2, mode="sentence")
    assert sent == ["left lung", "right lung"]
    with pytest.raises(ValueError):
        answer_vocabulary(answers, mode="words")
    with pytest.raises(ValueError):
        answer_vocabulary(answers, max_words=0)
