"""Demo report pieces: the heatmap lesion-hit share and the report texts, on a stand-in predictor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from amif.data.records import VQARecord
from amif.explain import Explanation
from amif_demo.report import format_extras, lesion_hit_share, plot_reliability


class HotPatch:
    """Explains every question with all heat on one fixed patch of a 4 x 4 grid."""

    def __init__(self, row: int, col: int):
        self.row, self.col = row, col

    def explain(self, path, question, method="tokens"):
        heat = np.zeros((4, 4))
        heat[self.row, self.col] = 1.0
        return Explanation(question=question, answers=["yes"], probs=[1.0], heatmap=heat)


def _rec(i, qtype, lesions):
    return VQARecord(qid=f"q{i}", image="img.png", question="is there a lesion", answer="yes", split="test",
                     question_type=qtype, extra={"lesions": lesions})


def test_lesion_hit_share(tmp_path):
    Image.new("L", (64, 64)).save(tmp_path / "img.png")
    top_left = {"center_px": [8, 8], "diameter_px": 4}  # inside patch (0, 0) only
    recs = [_rec(0, "presence", [top_left]), _rec(1, "presence", [{"center_px": [40, 40], "diameter_px": 4}]),
            _rec(2, "presence", []), _rec(3, "count", [top_left])]
    hit = lesion_hit_share(HotPatch(0, 0), tmp_path, recs)
    assert hit["n"] == 2 and hit["hit_share"] == 0.5  # the lesion-free and the count question are not counted
    assert hit["random_share"] == pytest.approx(1 / 16) and hit["heat_in_lesion"] == 0.5
    assert "50.0 %" in format_extras({"lesion_hit": hit}) and "6.2 %" in format_extras({"lesion_hit": hit})


def test_reliability_diagram(tmp_path):
    bins = [{"lo": 0, "hi": 0.5, "n": 3, "confidence": 0.4, "accuracy": 0.33}, {"lo": 0.5, "hi": 1, "n": 0,
                                                                                "confidence": None, "accuracy": None}]
    path = plot_reliability({"AMiF": {"ece": 0.07, "bins": bins}}, tmp_path / "r.png")
    assert path.stat().st_size > 1000
