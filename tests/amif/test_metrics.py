"""VQAAccuracy: counts against a hand count, NaN for empty groups, exact merge of states."""

from __future__ import annotations

import json
import math

import pytest
import torch

from amif.metrics import VQAAccuracy, summarize

TYPES = ["PRES", "MODALITY", "POS", "ORGAN"]
# (prediction, truth, dataset answer_type, question_type)
DATA = [
    ("Yes", "yes", "CLOSED", "PRES"),  # correct, yes/no
    ("no", "yes", "CLOSED", "PRES"),  # wrong, yes/no
    ("CT", "MRI", "CLOSED", "MODALITY"),  # wrong, CLOSED by dataset but not yes/no
    ("MRI.", "mri", "closed", "MODALITY"),  # correct (lower-case answer type accepted)
    ("left lung", "The left lung", "OPEN", "POS"),  # correct after normalisation
    ("2", "two", "OPEN", "COUNT"),  # correct; unknown type -> other
    ("none", "0", "OPEN", None),  # wrong: "none" is not "0"; no type -> other
    ("no", "no", None, "PRES"),  # correct; no answer type -> overall and yes/no rule only
    ("heart", "liver", None, "ORGAN"),  # wrong
]
# hand count: (correct, total)
EXPECTED = {
    "overall": (5, 9),
    "open": (2, 3),
    "closed": (2, 4),
    "open_yesno": (3, 6),
    "closed_yesno": (2, 3),
    "qtype/PRES": (2, 3),
    "qtype/MODALITY": (1, 2),
    "qtype/POS": (1, 1),
    "qtype/ORGAN": (0, 1),
    "qtype/other": (1, 2),
}


def _update(metric: VQAAccuracy, rows) -> None:
    preds, truths, ats, qts = zip(*rows)
    metric.update(list(preds), list(truths), list(ats), list(qts))


def test_counts_match_hand_count():
    m = VQAAccuracy(TYPES)
    _update(m, DATA)
    res = m.compute()
    assert set(res) == set(EXPECTED) | {f"n_{k}" for k in EXPECTED}
    for key, (c, n) in EXPECTED.items():
        assert res[f"n_{key}"].item() == n, key
        assert res[key].item() == pytest.approx(c / n), key
    assert res["n_open"].item() + res["n_closed"].item() == 7  # the None answer types are left out
    assert res["n_open_yesno"].item() + res["n_closed_yesno"].item() == 9


def test_batches_accumulate_like_one_update():
    whole = VQAAccuracy(TYPES)
    _update(whole, DATA)
    batched = VQAAccuracy(TYPES)
    for i in range(0, len(DATA), 2):
        _update(batched, DATA[i : i + 2])
    a, b = whole.compute(), batched.compute()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_merge_by_summing_states_is_exact():
    whole = VQAAccuracy(TYPES)
    _update(whole, DATA)
    left, right = VQAAccuracy(TYPES), VQAAccuracy(TYPES)
    _update(left, DATA[:4])
    _update(right, DATA[4:])
    # what DDP sync does: sum each state across ranks
    merged = VQAAccuracy(TYPES)
    for name in ("correct", "total", "qtype_correct", "qtype_total"):
        assert getattr(left, name).dtype == torch.long
        setattr(merged, name, getattr(left, name) + getattr(right, name))
    expected = whole.compute()
    got = merged.compute()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    # and torchmetrics' own merge
    left.merge_state(right)
    got2 = left.compute()
    for k in expected:
        assert torch.equal(expected[k], got2[k]), k


def test_empty_groups_are_nan_and_summarize_gives_none():
    m = VQAAccuracy(["A"])
    m.update(["yes"], ["yes"], [None], ["A"])
    res = m.compute()
    assert res["overall"].item() == 1.0
    assert math.isnan(res["open"].item()) and math.isnan(res["closed"].item())
    assert math.isnan(res["open_yesno"].item()) and math.isnan(res["qtype/other"].item())
    s = summarize(res)
    assert s["open"] is None and s["closed"] is None and s["overall"] == 1.0
    assert s["n_open"] == 0 and isinstance(s["n_open"], int) and s["n_overall"] == 1
    json.dumps(s, allow_nan=False)  # JSON-ready


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_nothing_updated_gives_nan():
    res = VQAAccuracy().compute()
    assert math.isnan(res["overall"].item()) and res["n_overall"].item() == 0
    assert set(k for k in res if k.startswith("qtype/")) == {"qtype/other"}


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_question_types_optional_and_reset():
    m = VQAAccuracy(["PRES"])
    m.update(["yes", "no"], ["yes", "yes"], ["CLOSED", "CLOSED"])  # no question types -> other
    res = m.compute()
    assert res["n_qtype/other"].item() == 2 and res["n_qtype/PRES"].item() == 0
    assert math.isnan(res["qtype/PRES"].item())
    m.reset()
    assert m.compute()["n_overall"].item() == 0


def test_declared_other_type_absorbs_unknown_types():
    m = VQAAccuracy(["PRES", "other"])
    m.update(["a", "b", "c"], ["a", "x", "c"], ["OPEN"] * 3, ["PRES", "weird", "other"])
    res = m.compute()
    assert res["n_qtype/other"].item() == 2 and res["qtype/other"].item() == pytest.approx(0.5)
    assert sorted(k for k in res if k.startswith("qtype/")) == ["qtype/PRES", "qtype/other"]


def test_bad_input():
    m = VQAAccuracy()
    with pytest.raises(ValueError):
        m.update(["a"], ["a", "b"], [None])
    with pytest.raises(ValueError):
        m.update(["a"], ["a"], ["YES/NO"])
    with pytest.raises(ValueError):
        m.update(["a"], ["a"], [None], ["x", "y"])
    with pytest.raises(ValueError):
        VQAAccuracy(["A", "A"])
