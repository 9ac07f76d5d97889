"""``amif demo``: the majority baseline on a hand-checked example, the table, and the whole pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from amif.data.records import VQARecord, load_split
from amif_demo import pipeline as demo

from helpers import MICRO


def _rec(qid: str, qtype: str, atype: str, answer: str) -> VQARecord:
    return VQARecord(qid=qid, image="images/x.png", question=f"question {qid}?", answer=answer, split="train",
                     answer_type=atype, question_type=qtype, study_id=qid)


TRAIN = [
    _rec("t1", "presence", "CLOSED", "yes"), _rec("t2", "presence", "CLOSED", "yes"),
    _rec("t3", "presence", "CLOSED", "no"),
    _rec("t4", "count", "OPEN", "2"), _rec("t5", "count", "OPEN", "two"), _rec("t6", "count", "OPEN", "1"),
    _rec("t7", "count", "CLOSED", "yes"), _rec("t8", "count", "CLOSED", "no"),  # tie -> "no" (alphabetical)
    _rec("t9", "organ", "OPEN", "brain"), _rec("t10", "organ", "OPEN", "Brain"), _rec("t11", "organ", "OPEN", "liver"),
]
TEST = [
    _rec("q1", "presence", "CLOSED", "yes"),  # majority yes: right
    _rec("q2", "presence", "CLOSED", "no"),  # wrong
    _rec("q3", "count", "OPEN", "two"),  # majority "2" ("2" twice, "two" normalises to "2"): right
    _rec("q4", "count", "CLOSED", "yes"),  # tie yes/no -> "no": wrong
    _rec("q5", "organ", "OPEN", "liver"),  # majority brain: wrong
    _rec("q6", "plane", "OPEN", "axial"),  # unseen type -> majority of all training answers ("yes", 3x): wrong
]


def test_majority_answers_hand_checked():
    answers = demo.majority_answers(TRAIN)
    assert answers[("presence", "CLOSED")] == "yes"
    assert answers[("count", "OPEN")] == "2"
    assert answers[("count", "CLOSED")] == "no"
    assert answers[("organ", "OPEN")] == "brain"
    # all questions: yes x3 (t1, t2, t7), 2 x2, no x2, brain x2 -> "yes"
    assert answers[(None, None)] == "yes"
    assert demo.majority_predict(answers, TEST[5]) == "yes"


def test_majority_baseline_metrics_and_lesion_row():
    rows, m = demo.majority_baseline(TRAIN, TEST)
    assert [r["prediction"] for r in rows] == ["yes", "yes", "2", "no", "brain", "yes"]
    assert [r["correct"] for r in rows] == [True, False, True, False, False, False]
    assert m["overall"] == pytest.approx(2 / 6) and m["n_overall"] == 6
    assert m["closed"] == pytest.approx(1 / 3) and m["open"] == pytest.approx(1 / 3)
    assert m["qtype/presence"] == pytest.approx(0.5) and m["qtype/count"] == pytest.approx(0.5)
    demo.add_lesion_metric(m, rows)
    assert m["lesion"] == pytest.approx(2 / 4) and m["n_lesion"] == 4  # presence + count questions


def test_table_columns_rows_and_gain():
    cols = {"majority answer": {"overall": 0.5, "n_overall": 10, "lesion": 0.25, "n_lesion": 4,
                                "qtype/count": 0.25, "n_qtype/count": 4},
            "AMiF": {"overall": 0.8, "n_overall": 10, "lesion": 0.75, "n_lesion": 4,
                     "qtype/count": 0.75, "n_qtype/count": 4}}
    table = demo.format_demo_table(cols, reference=("AMiF", "majority answer"))
    lines = table.splitlines()
    assert lines[0] == "| group | n | majority answer | AMiF | AMiF - majority answer |"
    assert "| overall | 10 | 50.0 | 80.0 | +30.0 |" in lines
    assert any(line.startswith("| lesion questions (presence, count, position, size) | 4 | 25.0 | 75.0 | +50.0")
               for line in lines)
    assert "| type: count | 4 | 25.0 | 75.0 | +50.0 |" in lines
    assert not any(line.startswith("| open ") for line in lines)  # no open questions counted: row left out


def test_demo_pipeline_end_to_end(tmp_path, capsys):
    pretrain = demo.pretraining_available()
    fast = ["run.max_epochs=1", "run.batch_size=16", "run.eval_batch_size=32", "run.log_every_n_steps=1",
            "model.decoder.rank_k=4"]
    out = tmp_path / "demo"
    doc = demo.run_demo(
        out, scale=0.03, seed=0, pretrain=pretrain, overrides=MICRO + fast,
        pretrain_overrides=["run.max_steps=2", "run.batch_size=8", "run.eval_batch_size=32",
                            "run.progress_bar=false", "data.augment.enabled=false"],
        progress=False, with_scratch=True,
    )
    report = out / "report"
    for name in ("results.md", "results.json", "accuracy_by_group.png", "loss_curves.png", "val_accuracy.png",
                 "test_examples.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    if pretrain:
        assert (report / "pretraining_curves.png").is_file()
    for name in ("explanations.png", "reliability.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name

    expected = ["majority", "question_only", "scratch"] + (["pretrained"] if pretrain else [])  # with_scratch
    saved = json.loads((report / "results.json").read_text(encoding="utf-8"))
    assert list(saved["metrics"]) == expected == list(doc["metrics"])
    header = saved["table_markdown"].splitlines()[0]
    for key in expected:
        assert demo.MODELS[key] in header
    md = (report / "results.md").read_text(encoding="utf-8")
    assert "machine:" in md and "date:" in md and header in md
    # per-source accuracy and study-level intervals of every group, for every model
    assert "## Accuracy per source" in md and "## Study-level 95 % intervals" in md
    groups = saved["bootstrap"]["groups"]
    assert set(groups) >= {"overall", "lesion"} | {f"qtype/{r.question_type}" for r in load_split(out / "data", "test")}
    for key in expected:
        acc, lo, hi = groups["overall"][key]
        assert lo <= acc <= hi and acc == pytest.approx(saved["metrics"][key]["overall"])
    test_sources = {r.extra["source"] for r in load_split(out / "data", "test")}
    assert set(saved["by_source"]) == test_sources and test_sources <= set(saved["data"]["source_details"])
    assert set(saved["data"]["sources"]) == set(saved["data"]["source_details"])
    assert header in capsys.readouterr().out
    # the explanation / image-reliance / calibration section: AMiF and question only, both conditions
    why = saved["explain"]
    main_label = demo.MODELS["pretrained" if pretrain else "scratch"]
    assert set(why["image_reliance"]) == {main_label, demo.MODELS["question_only"]}
    for rel in why["image_reliance"].values():
        assert set(rel["sensitivity"]) == {"blank", "shuffled"} and "overall" in rel["shuffled"]
    assert why["lesion_hit"]["question_type"] == "presence" and "seconds" in why
    assert why["calibration"][main_label]["ece"] == pytest.approx(saved["metrics"][
        "pretrained" if pretrain else "scratch"]["ece"])
    assert "Image reliance on the test split" in md and "calibration error" in md

    # the baseline and the lesion rows agree with a recomputation from the files
    train, test = load_split(out / "data", "train"), load_split(out / "data", "test")
    rows, maj = demo.majority_baseline(train, test)
    assert saved["metrics"]["majority"]["overall"] == pytest.approx(maj["overall"])
    preds = json.loads((out / "runs" / "scratch" / "results_test.json").read_text(encoding="utf-8"))["predictions"]
    acc, n = demo.group_accuracy(preds)
    assert saved["metrics"]["scratch"]["n_lesion"] == n == sum(r.question_type in demo.LESION_TYPES for r in test)
    assert saved["metrics"]["scratch"]["lesion"] == pytest.approx(acc)
    assert set(saved["seconds"]) >= {"data", "question_only", "scratch", "report", "total"}
    # with pre-training and two cores the question-only run trains in a second process meanwhile
    from amif_demo.background import usable_cpus

    background = pretrain and usable_cpus() >= 2
    assert saved["background_runs"] == (["question_only"] if background else [])
    if background:
        log = (out / "runs" / "question_only" / "train.log").read_text(encoding="utf-8")
        assert "Test split" in log  # the child's output went to its log
        # its reliance and calibration passes ran there too, and match a recomputation here
        assert "question_only_reliance" in saved["seconds"]
        from amif_demo.report import question_only_extras

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the second process
        try:
            again = question_only_extras(str(out), {})
        finally:
            torch.set_num_threads(threads)
        label = demo.MODELS["question_only"]
        for mode in ("blank", "shuffled"):
            assert why["image_reliance"][label][mode]["overall"] == pytest.approx(again["reliance"][mode]["overall"])
        assert why["real_image_metrics"][label]["overall"] == pytest.approx(again["real"]["overall"])
        assert why["calibration"][label]["ece"] == pytest.approx(again["calibration"]["ece"])
        assert (out / "runs" / "question_only" / "model").is_dir()

    # only the model folders of the runs stay (the Lightning checkpoints are hundreds of MB each)
    assert (out / "runs" / "scratch" / "model").is_dir()
    assert not (out / "runs" / "scratch" / "checkpoints").exists()

    # a second run with the same seed and scale reuses the data
    assert demo.ensure_data(out / "data", seed=0, scale=0.03, say=lambda s: None)["reused"] is True


def test_background_finetune_reraises_the_runs_error(tmp_path):
    """A failing run in the second process surfaces in the parent, with the file named."""
    from amif_demo.background import start_finetune
    from amif_train.config import load_config

    cfg = load_config(demo.FINETUNE_CONFIG, [f"data.root={tmp_path / 'missing'}",
                                             f"run.output_dir={tmp_path / 'run'}"])
    future = start_finetune(cfg, tmp_path / "run" / "train.log")
    with pytest.raises(Exception, match="missing"):
        future.result(timeout=300)
