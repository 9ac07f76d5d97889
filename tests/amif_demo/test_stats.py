"""Per-source accuracy and study-level bootstrap intervals of the demo report."""

from __future__ import annotations

from amif.data.records import VQARecord
from amif_demo.stats import (
    format_bootstrap_table,
    format_source_table,
    format_source_type_table,
    per_source_accuracy,
    study_bootstrap,
)

LESION = ("presence", "position")


def _records() -> list[VQARecord]:
    """20 studies x 4 position questions (source a) and 10 studies x 2 presence questions (source b)."""
    out = []
    for s in range(20):
        for k in range(4):
            out.append(VQARecord(qid=f"a{s}-{k}", image=f"a{s}.png", question="Which side?", answer="left",
                                 split="test", answer_type="OPEN", question_type="position", study_id=f"a{s}",
                                 extra={"source": "a"}))
    for s in range(10):
        for k in range(2):
            out.append(VQARecord(qid=f"b{s}-{k}", image=f"b{s}.png", question="Is there a lesion?", answer="yes",
                                 split="test", answer_type="CLOSED", question_type="presence", study_id=f"b{s}",
                                 extra={"source": "b"}))
    return out


def _rows(records, correct) -> list[dict]:
    return [{"qid": r.qid, "correct": correct(r), "question_type": r.question_type, "answer_type": r.answer_type}
            for r in records]


def test_intervals_resample_whole_studies():
    recs = _records()
    # model: whole studies right or wrong (12 of 20 position studies), question-only: half of each study
    model = _rows(recs, lambda r: r.study_id[0] == "b" or int(r.study_id[1:]) < 12)
    q_only = _rows(recs, lambda r: int(r.qid[-1]) % 2 == 0)
    boot = study_bootstrap({"pretrained": model, "question_only": q_only}, recs, LESION,
                           ("pretrained", "question_only"), n_boot=2000, seed=0)
    pos = boot["qtype/position"]
    assert pos["n"] == 80 and pos["studies"] == 20
    acc, lo, hi = pos["pretrained"]
    assert acc == 0.6 and lo < acc < hi
    # 20 studies of 4 identical answers: the interval is that of 20 draws (~ +-0.21), not of 80 (~ +-0.11)
    assert hi - lo > 0.3
    # question-only is right on exactly half of every study: no study-to-study variation at all
    assert boot["qtype/position"]["question_only"] == [0.5, 0.5, 0.5]
    g = pos["gain"]
    assert abs(g[0] - 0.1) < 1e-9 and g[1] < 0.1 < g[2]
    assert boot["overall"]["n"] == 100 and boot["overall"]["studies"] == 30
    again = study_bootstrap({"pretrained": model, "question_only": q_only}, recs, LESION,
                            ("pretrained", "question_only"), n_boot=2000, seed=0)
    assert again == boot
    table = format_bootstrap_table(boot, {"pretrained": "AMiF", "question_only": "question only"},
                                   ("pretrained", "question_only"))
    assert "| type: position | 80 | 20 | 60.0 [" in table and "+10.0 [" in table


def test_per_source_accuracy():
    recs = _records()
    model = _rows(recs, lambda r: r.extra["source"] == "b")
    per = per_source_accuracy({"pretrained": model}, recs, LESION)
    assert per["a"]["n"] == 80 and per["a"]["pretrained"]["overall"] == 0.0
    assert per["b"]["pretrained"]["qtype/presence"] == 1.0 and per["b"]["n_lesion"] == 20
    assert "`b` | 20 | 20 | 100.0 / 100.0" in format_source_table(per, {"pretrained": "AMiF"})
    assert "| `a` | 0 (80) | - |" in format_source_type_table(per, "pretrained")
