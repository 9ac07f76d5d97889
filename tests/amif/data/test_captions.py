"""Caption cleaning rules (AMiF pre-training captions)."""

import pytest

from amif.data.captions import clean_caption


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Chest X-Ray: PA view.", "chest x ray pa view"),
        ("CT (axial) of the ABDOMEN; liver/spleen!", "ct axial of the abdomen liver spleen"),
        ("It's \"normal\"? *maybe* #1 ~ok", "its normal maybe 1 ok"),
        ("snake_case_word, and more", "snakecaseword and more"),
        ("<person> with a fracture", "person with a fracture"),
        ("  many   spaces\n\tand\nnewlines  ", "many spaces and newlines"),
        ("a-b/c", "a b c"),
        ("keeps digits 3.5 cm and % signs", "keeps digits 35 cm and % signs"),
    ],
)
def test_clean_caption_rules(raw, expected):
    assert clean_caption(raw) == expected


def test_clean_caption_truncates_words():
    text = " ".join(f"w{i}" for i in range(300))
    out = clean_caption(text)
    assert out.split() == [f"w{i}" for i in range(200)]
    assert clean_caption("a b c d", max_words=2) == "a b"


@pytest.mark.parametrize("raw", ["", "   ", "...", "(); ~ !", "\n\n"])
def test_clean_caption_empty_raises(raw):
    with pytest.raises(ValueError, match="empty"):
        clean_caption(raw)


def test_clean_caption_rejects_non_strings_and_bad_max_words():
    with pytest.raises(ValueError):
        clean_caption(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        clean_caption("text", max_words=0)
