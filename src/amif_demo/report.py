"""The demo's report pictures (``write_all``) and its pieces about *why*: explanation sheet, heatmap
lesion-hit share, image reliance, calibration.

Both work on a finished demo folder (``DIR/data``, ``DIR/runs/<model>/model``), so the report can be
redrawn without training (``benchmarks/explain_demo.py`` reruns ``demo_extras``). The generic pictures
they use are in :mod:`amif_train.reporting`.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amif_train.reporting import (
    pick_examples,
    plot_accuracy_bars,
    plot_examples,
    plot_loss_curves,
    plot_pretraining_curves,
    plot_val_accuracy,
    pyplot,
)

LESION_FIRST = ("presence", "count", "position", "size")


def lesion_hit_share(predictor: Any, data_dir: Path, records: Sequence[Any], question_type: str = "presence",
                     method: str = "tokens") -> dict[str, Any]:
    """How often the hottest heatmap patch lies on a lesion, against a uniformly random patch.

    Over the ``question_type`` questions whose image has at least one lesion (``extra["lesions"]``
    with ``center_px`` / ``diameter_px`` in the stored image's pixels): ``hit_share`` is the share whose
    argmax patch overlaps a lesion, ``random_share`` the mean share of patches a lesion overlaps (what
    a random patch would hit), ``heat_in_lesion`` the mean share of the heat inside lesion patches.
    """
    from PIL import Image

    from amif.data.records import resolve_image
    from amif.explain import patch_mask

    hits, chance, mass = [], [], []
    for r in records:
        lesions = (r.extra or {}).get("lesions") or []
        if r.question_type != question_type or not lesions:
            continue
        path = resolve_image(data_dir, r.image)
        with Image.open(path) as im:
            w, h = im.size
        expl = predictor.explain(path, r.question, method=method)
        grid = expl.heatmap.shape[0]
        m = patch_mask(lesions, (h, w), grid)
        heat = expl.heatmap
        hits.append(bool(m.flat[int(np.argmax(heat))]) if heat.max() > 0 else False)
        chance.append(float(m.mean()))
        mass.append(float(heat[m].sum() / heat.sum()) if heat.sum() > 0 else 0.0)
    n = len(hits)
    return {"question_type": question_type, "method": method, "n": n,
            "hit_share": sum(hits) / n if n else None, "random_share": float(np.mean(chance)) if n else None,
            "heat_in_lesion": float(np.mean(mass)) if n else None}


def plot_explanation_sheet(predictor: Any, data_dir: Path, records: Sequence[Any], path: Path, n: int = 12,
                           seed: int = 0) -> Path:
    """``n`` test questions (lesion types first): heatmap overlay, question, answer, GCA words and gate."""
    plt = pyplot()

    from amif.answers import exact_match
    from amif.data.records import resolve_image
    from amif.explain_figure import overlay

    picked = pick_examples(records, n=n, seed=seed, first_types=LESION_FIRST)
    cols = 4
    rows = max(1, math.ceil(len(picked) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 6.0 * rows), squeeze=False)
    for ax, rec in zip(axes.flat, picked):
        expl = predictor.explain(resolve_image(data_dir, rec.image), rec.question)
        ax.imshow(overlay(expl.image, expl.heatmap))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"[{rec.question_type}] " + "\n".join(textwrap.wrap(rec.question, 34)[:3]), fontsize=10,
                     loc="left")
        ok = exact_match(expl.answer, rec.answer)
        words = ", ".join(w for w, _ in expl.gca_words[:4])
        lines = [(f"true: {rec.answer}", "black"),
                 (f"AMiF: {expl.answer} ({100 * expl.probs[0]:.0f} %)", "#1a7f37" if ok else "#cf222e"),
                 ("\n".join(textwrap.wrap(f"GCA reads: {words}", 40)[:2]), "#444"),
                 (f"gate {expl.gate_mean:.2f}" if expl.gate_mean is not None else "", "#444")]
        y = -0.04
        for text, color in lines:
            ax.text(0.0, y, text, transform=ax.transAxes, va="top", ha="left", fontsize=10, color=color)
            y -= 0.085 * (1 + text.count("\n"))
    for ax in list(axes.flat)[len(picked):]:
        ax.axis("off")
    fig.suptitle("Explanations: heat = image patches the answer depended on (gradient x activation)",
                 fontsize=14, y=0.995)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 1.1 / (6.0 * rows), bottom=1.9 / (6.0 * rows),
                        hspace=0.75, wspace=0.06)
    fig.savefig(path, dpi=85)
    plt.close(fig)
    return path


def plot_reliability(calibration: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, one line per model."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    ax.plot([0, 1], [0, 1], "--", color="#999", lw=1, label="perfect calibration")
    for (name, cal), color in zip(calibration.items(), ("#1f77b4", "#ff7f0e", "#2ca02c")):
        pts = [(b["confidence"], b["accuracy"], b["n"]) for b in cal["bins"] if b["n"]]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color,
                label=f"{name} (ECE {100 * cal['ece']:.1f} %)")
        for c, a, k in pts:
            ax.annotate(str(k), (c, a), textcoords="offset points", xytext=(3, -10), fontsize=7, color=color)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 probability (bin mean; 15 bins)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("Reliability diagram (test split; numbers: questions per bin)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def model_extras(out: Path, key: str, test: Sequence[Any], rows: Sequence[dict], batch_size: int = 64
                 ) -> tuple[dict[str, Any], Any]:
    """Real-image test metrics, image reliance and calibration of the model in ``out/runs/<key>/model``,
    and the model itself. ``rows``: its test rows; the question-only model's were computed on blank
    images, so it gets a real-image pass (and its own rows serve as the blank condition)."""
    from amif.calibration import calibration_from_rows
    from amif.data.records import split_file
    from amif.data.transforms import build_eval_transform
    from amif.data.vqa_dataset import VQADataset
    from amif.evaluation import evaluate_dataset
    from amif.models.vqa import AMiFVQA
    from amif.reliance import image_reliance

    t0 = time.time()
    data_dir = out / "data"
    qtypes = sorted({r.question_type for r in test if r.question_type})
    model = AMiFVQA.from_pretrained(out / "runs" / key / "model")
    size = model.image_encoder.image_size
    ds = VQADataset(data_dir, list(test), build_eval_transform(size), image_size=size,
                    source=str(split_file(data_dir, "test")))
    given = list(rows)
    real_rows, known = given, {}
    if key == "question_only" and len(given) == len(test):  # its own test run saw blank images
        known["blank"] = (given, _score(given, qtypes))
    if key == "question_only" or len(given) != len(test):
        real_rows, _ = evaluate_dataset(model, ds, batch_size=batch_size, question_types=qtypes)
    done = {"real": _score(real_rows, qtypes),
            "reliance": image_reliance(model, ds, real_rows, batch_size=batch_size, question_types=qtypes,
                                       known=known),
            "calibration": calibration_from_rows(given or real_rows)}
    done["seconds"] = round(time.time() - t0, 1)
    return done, model


def question_only_extras(out: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`model_extras` of the question-only run in ``out`` (after its run, in its own process:
    :func:`amif_demo.background.start_finetune`'s ``then``)."""
    import json

    from amif.data.records import load_split

    root = Path(out)
    rows = json.loads((root / "runs" / "question_only" / "results_test.json").read_text(encoding="utf-8"))
    return model_extras(root, "question_only", load_split(root / "data", "test"), rows["predictions"])[0]


def demo_extras(out: Path, records: Mapping[str, Sequence[Any]], rows_by_model: Mapping[str, Sequence[dict]],
                labels: Mapping[str, str], main: str, plots: bool = True, batch_size: int = 64,
                done: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Image reliance and calibration of ``main`` and ``question_only``, the lesion-hit share of
    ``main``'s heatmaps and (``plots``) the explanation sheet and reliability diagram in ``out/report``.

    ``rows_by_model``: each model's test rows with the images it was evaluated on (real images for
    AMiF; the question-only model's are blank, so it gets a real-image pass here). ``done``: a model's
    :func:`model_extras` computed already (by the second process). Returns what the report's
    ``explain`` section holds, with ``images`` {title: path} and the seconds it took here."""
    from amif.inference import VQAPredictor
    from amif.reliance import format_reliance_table

    t0 = time.time()
    data_dir, report_dir = out / "data", out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    test = list(records["test"])
    reliance, real, calibration = {}, {}, {}
    predictor = None
    for key in (main, "question_only"):
        if not (out / "runs" / key / "model").is_dir():
            continue
        extras = None if key == main else (done or {}).get(key)  # main's model draws the heatmaps below
        if extras is None:
            extras, model = model_extras(out, key, test, rows_by_model.get(key) or [], batch_size)
            if key == main:
                predictor = VQAPredictor(model)
        real[labels[key]] = extras["real"]
        reliance[labels[key]] = extras["reliance"]
        calibration[labels[key]] = extras["calibration"]
    result: dict[str, Any] = {"image_reliance": reliance, "real_image_metrics": real,
                              "calibration": calibration, "images": {}}
    result["reliance_table"] = format_reliance_table(reliance, real) if reliance else ""
    if predictor is not None:
        result["lesion_hit"] = lesion_hit_share(predictor, data_dir, test)
        if plots:
            result["images"]["explanations"] = str(plot_explanation_sheet(predictor, data_dir, test,
                                                                          report_dir / "explanations.png"))
    if plots and calibration:
        result["images"]["reliability diagram"] = str(plot_reliability(calibration, report_dir / "reliability.png"))
    result["seconds"] = round(time.time() - t0, 1)
    return result


def _score(rows: Sequence[dict], qtypes: Sequence[str]) -> dict[str, Any]:
    """Accuracy metrics of existing rows (as evaluate_dataset computes them)."""
    from amif.metrics import VQAAccuracy, summarize

    metric = VQAAccuracy(question_types=list(qtypes), sync_on_compute=False)
    if rows:
        metric.update([r["prediction"] for r in rows], [r["answer"] for r in rows], [r["answer_type"] for r in rows],
                      [r["question_type"] for r in rows])
    return summarize(metric.compute())


def format_extras(extras: Mapping[str, Any]) -> str:
    """Markdown lines of the extras for results.md and the console."""
    lines = []
    hit = extras.get("lesion_hit")
    if hit and hit.get("n"):
        lines.append(f"Heatmaps on the {hit['n']} presence questions about images with lesions: the hottest patch "
                     f"lies on a lesion for {100 * hit['hit_share']:.1f} % of them (a random patch: "
                     f"{100 * hit['random_share']:.1f} %); {100 * hit['heat_in_lesion']:.1f} % of the heat is on "
                     "lesion patches.")
    for name, cal in (extras.get("calibration") or {}).items():
        if cal.get("ece") is not None:
            lines.append(f"{name}: expected calibration error of the top-1 probability {100 * cal['ece']:.1f} % "
                         "(15 bins).")
    if extras.get("reliance_table"):
        lines += ["", "Image reliance on the test split (accuracy %; changed: share of answers that differ "
                  "from the real-image run, %):", "", extras["reliance_table"]]
    return "\n".join(lines)


def write_all(
    report_dir: Path,
    *,
    run_dirs: Mapping[str, Path],
    pretrain_dirs: Mapping[str, Path],
    columns: Mapping[str, Mapping[str, Any]],
    table_rows: Sequence[tuple[str, str]],
    data_dir: Path,
    test_records: Sequence[Any],
    predictions: Mapping[str, Sequence[Mapping]],
    main: str,
    baseline: str | None,
    seed: int = 0,
    first_types: Sequence[str] = LESION_FIRST,
) -> dict[str, str]:
    """Draw the demo report's pictures into ``report_dir``: accuracy by group, fine-tuning loss and validation
    accuracy, pre-training losses, and test examples of ``main`` and ``baseline``; returns {title: path}."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    out["test accuracy by question group"] = str(plot_accuracy_bars(columns, table_rows,
                                                                    report_dir / "accuracy_by_group.png"))
    if run_dirs:
        out["fine-tuning loss"] = str(plot_loss_curves(run_dirs, report_dir / "loss_curves.png"))
        out["validation accuracy"] = str(plot_val_accuracy(run_dirs, report_dir / "val_accuracy.png"))
    if pretrain_dirs:
        out["pre-training losses"] = str(plot_pretraining_curves(pretrain_dirs, report_dir / "pretraining_curves.png"))
    shown = {k: predictions[k] for k in (main, baseline) if k and k in predictions}
    if shown:
        out["test examples"] = str(plot_examples(data_dir, test_records, shown, report_dir / "test_examples.png",
                                                 seed=seed, first_types=first_types))
    return out
