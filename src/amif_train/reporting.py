"""What a run reports: the results JSON, console tables, and the report pictures (training curves,
accuracy bars, a sheet of test examples).

The picture functions take plain data (run folders, metrics dicts, prediction rows) and write one PNG
each, so they can be redrawn from finished runs without training anything. They need matplotlib (the
``plots`` extra), imported only when a picture is drawn, so that training and evaluation run without it.
"""

from __future__ import annotations

import csv
import json
import math
import random
import textwrap
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from amif.extras import require
from amif_train.run_info import git_commit

ROWS = (
    ("overall", "overall"),
    ("open", "open (answer_type)"),
    ("closed", "closed (answer_type)"),
    ("open_yesno", "open (yes/no rule)"),
    ("closed_yesno", "closed (yes/no rule)"),
)
COLORS = ("#7f7f7f", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b")  # one per model in the pictures
GOOD, BAD = "#1a7f37", "#cf222e"  # right / wrong answers


def write_results(path: str | Path, *, metrics: Mapping[str, Any], predictions: list[dict], **info: Any) -> Path:
    """Write a results JSON: metrics, every prediction with its ranked alternatives, and run facts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_commit(), **info,
           "metrics": dict(metrics), "predictions": predictions}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def format_table(columns: Mapping[str, Mapping[str, Any]], question_types: bool = True) -> str:
    """Markdown table: one column per result set (e.g. model), rows = accuracy groups (percent, n)."""
    names = list(columns)
    first = next(iter(columns.values()), {})
    rows = list(ROWS)
    if question_types:
        qts = sorted({k.split("/", 1)[1] for c in columns.values() for k in c if k.startswith("qtype/")})
        rows += [(f"qtype/{q}", f"type: {q}") for q in qts]
    lines = ["| group | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for key, label in rows:
        n = first.get(f"n_{key}")
        if n in (None, 0) and all(c.get(key) is None for c in columns.values()):
            continue
        vals = " | ".join(_fmt(c.get(key)) for c in columns.values())
        lines.append(f"| {label} | {'-' if n is None else n} | {vals} |")
    return "\n".join(lines)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no window); a one-line error without matplotlib."""
    matplotlib = require("matplotlib", extra="plots", purpose="drawing report pictures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, int, float]]]:
    """Lightning CSVLogger file -> {column: [(step, epoch, value), ...]} for the non-empty cells."""
    out: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            epoch = int(float(row.get("epoch") or 0))
            for k, v in row.items():
                if k in ("step", "epoch") or v in (None, ""):
                    continue
                try:
                    out[k].append((step, epoch, float(v)))
                except ValueError:
                    continue
    return dict(out)


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _grid(n: int, per_row: int = 3) -> tuple[int, int]:
    cols = min(per_row, max(1, n))
    return math.ceil(max(1, n) / cols), cols


def plot_loss_curves(run_dirs: Mapping[str, Path], path: Path) -> Path:
    """One panel per fine-tuning run: training loss per logged step (raw and smoothed), validation loss."""
    plt = pyplot()
    rows, cols = _grid(len(run_dirs))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, run) in zip(axes.flat, run_dirs.items()):
        m = read_metrics_csv(Path(run) / "logs" / "metrics.csv")
        tr = m.get("train/loss", [])
        if tr:
            steps, vals = [s for s, _, _ in tr], [v for _, _, v in tr]
            ax.plot(steps, vals, color="#1f77b4", alpha=0.3, lw=1)
            ax.plot(steps, _smooth(vals, 5), color="#1f77b4", lw=2, label="train (smoothed)")
        va = m.get("val/loss", [])
        if va:
            ax.plot([s for s, _, _ in va], [v for _, _, v in va], "o-", color="#d62728", lw=2, label="validation")
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("answer loss (nats / question)")
        ax.grid(alpha=0.3)
        if tr or va:
            ax.legend(fontsize=9)
        else:
            ax.text(0.5, 0.5, "no logged values", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(run_dirs):]:
        ax.axis("off")
    fig.suptitle("Fine-tuning loss", fontsize=14)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_val_accuracy(run_dirs: Mapping[str, Path], path: Path) -> Path:
    """Validation accuracy per epoch: one panel with ``overall`` of every run, one panel per run by group."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    n = len(run_dirs) + 1
    rows, cols = _grid(n, per_row=4 if n == 4 else 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    flat = list(axes.flat)
    metrics = {name: read_metrics_csv(Path(run) / "logs" / "metrics.csv") for name, run in run_dirs.items()}
    ax = flat[0]
    for i, (name, m) in enumerate(metrics.items()):
        pts = m.get("val/overall", [])
        ax.plot([e + 1 for _, e, _ in pts], [100 * v for _, _, v in pts], "o-", lw=2, color=COLORS[(i + 1) % 6],
                label=name)
    ax.set_title("all runs: overall")
    for ax, (name, m) in zip(flat[1:], metrics.items()):
        for key, style in (("val/overall", "o-"), ("val/open", "s--"), ("val/closed", "^--")):
            pts = m.get(key, [])
            if pts:
                ax.plot([e + 1 for _, e, _ in pts], [100 * v for _, _, v in pts], style, lw=1.8,
                        label=key.split("/", 1)[1])
        ax.set_title(name)
    last = max([e + 1 for m in metrics.values() for _, e, _ in m.get("val/overall", [])] or [1])
    for ax in flat[:n]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, last + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=9)
        else:
            ax.text(0.5, 0.5, "no validation epochs", ha="center", va="center", transform=ax.transAxes)
    for ax in flat[n:]:
        ax.axis("off")
    fig.suptitle("Validation accuracy (model selection runs on it; the test split is used once)", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_pretraining_curves(pretrain_dirs: Mapping[str, Path], path: Path) -> Path:
    """One panel per pre-training stage: every logged training loss per step, retrieval recall on a twin axis."""
    plt = pyplot()
    rows, cols = _grid(len(pretrain_dirs), per_row=2)
    fig, axes = plt.subplots(rows, cols, figsize=(6.6 * cols, 5.0 * rows), squeeze=False)
    for ax, (name, run) in zip(axes.flat, pretrain_dirs.items()):
        m = read_metrics_csv(Path(run) / "logs" / "metrics.csv")
        losses = sorted(k for k in m if k.startswith("train/") and not k.startswith("train/tau"))
        for i, key in enumerate(k for k in losses if k != "train/loss"):
            pts = m[key]
            ax.plot([s for s, _, _ in pts], _smooth([v for _, _, v in pts], 3), lw=1.6, color=COLORS[(i + 1) % 6],
                    label=key[len("train/"):])
        if "train/loss" in m:
            pts = m["train/loss"]
            ax.plot([s for s, _, _ in pts], _smooth([v for _, _, v in pts], 3), lw=2.4, color="black",
                    label="total loss")
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (smoothed)")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        rec = m.get("val/recall_mean", [])
        if rec:
            ax2 = ax.twinx()
            ax2.plot([s for s, _, _ in rec], [100 * v for _, _, v in rec], ":o", color="#d62728", lw=1.5,
                     label="validation retrieval recall (right axis)")
            ax2.set_ylabel("retrieval recall mean (%)", color="#d62728")
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4)
        else:
            ax.text(0.5, 0.5, "no logged losses", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(pretrain_dirs):]:
        ax.axis("off")
    fig.suptitle("Pre-training losses", fontsize=14)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_accuracy_bars(columns: Mapping[str, Mapping[str, Any]], rows: Sequence[tuple[str, str]], path: Path
                       ) -> Path:
    """Grouped bars: test accuracy of every model per group (overall, open, closed, lesion, question types)."""
    plt = pyplot()
    labels = [lab.replace("type: ", "").split(" (")[0] for _, lab in rows]
    keys = [k for k, _ in rows]
    names = list(columns)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(9.0, 1.05 * len(keys) + 2), 5.2))
    for i, name in enumerate(names):
        vals = [columns[name].get(k) for k in keys]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(keys))]
        ax.bar(xs, [0 if v is None else 100 * v for v in vals], width, label=name, color=COLORS[i % 6])
    for j, k in enumerate(keys):
        n = next((c.get(f"n_{k}") for c in columns.values() if c.get(f"n_{k}") is not None), None)
        if n is not None:
            ax.text(j, 101, f"n={n}", ha="center", va="bottom", fontsize=8, color="#444")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    for j, k in enumerate(keys):
        if k == "lesion":
            ax.axvspan(j - 0.45, j + 0.45, color="#fff3b0", zorder=0)
    ax.set_ylim(0, 108)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy by question group")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.28))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pick_examples(test_records: Sequence[Any], n: int = 16, seed: int = 0,
                  first_types: Sequence[str] = ()) -> list[Any]:
    """``n`` test records spread over question types (``first_types`` first), at most one per image if possible."""
    rng = random.Random(seed)
    by_type: dict[str, list[Any]] = defaultdict(list)
    for r in test_records:
        by_type[r.question_type or "other"].append(r)
    for v in by_type.values():
        rng.shuffle(v)
    order = [t for t in first_types if t in by_type] + sorted(t for t in by_type if t not in first_types)
    picked: list[Any] = []
    used_images: set[str] = set()
    while len(picked) < min(n, len(test_records)):
        added = False
        for t in order:
            if len(picked) >= n:
                break
            pool = by_type[t]
            k = next((i for i, r in enumerate(pool) if r.image not in used_images), 0 if pool else None)
            if k is None:
                continue
            r = pool.pop(k)
            used_images.add(r.image)
            picked.append(r)
            added = True
        if not added:
            break
    return picked


def plot_examples(data_dir: Path, test_records: Sequence[Any], predictions: Mapping[str, Sequence[Mapping]],
                  path: Path, *, n: int = 16, seed: int = 0, first_types: Sequence[str] = ()) -> Path:
    """A sheet of test images with the question, the true answer and each model's answer (green right, red wrong)."""
    plt = pyplot()
    from amif.answers import exact_match
    from amif.data.images import load_image
    from amif.data.records import resolve_image

    by_qid = {name: {r["qid"]: r for r in rows} for name, rows in predictions.items()}
    picked = pick_examples(test_records, n=n, seed=seed, first_types=first_types)
    cols = 4
    rows = max(1, math.ceil(len(picked) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 5.6 * rows), squeeze=False)
    for ax, rec in zip(axes.flat, picked):
        img = load_image(resolve_image(data_dir, rec.image)).convert("L")
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        q = "\n".join(textwrap.wrap(rec.question, 34)[:3])
        ax.set_title(f"[{rec.question_type}] {q}", fontsize=10, loc="left")
        lines = [(f"true: {rec.answer}", "black")]
        for name, table in by_qid.items():
            p = table.get(rec.qid)
            if p is None:
                continue
            ok = exact_match(p["prediction"], rec.answer)
            lines.append((f"{name}: {p['prediction']}", GOOD if ok else BAD))
        for i, (text, color) in enumerate(lines):
            ax.text(0.0, -0.04 - 0.085 * i, text, transform=ax.transAxes, va="top", ha="left", fontsize=10.5,
                    color=color, fontweight="bold" if i else "normal")
    for ax in list(axes.flat)[len(picked):]:
        ax.axis("off")
    fig.suptitle("Test examples (green: right, red: wrong)", fontsize=15, y=0.995)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 1.1 / (5.6 * rows), bottom=1.3 / (5.6 * rows),
                        hspace=0.62, wspace=0.06)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
