"""``amif demo``: the whole method on the embedded demo dataset in one command.

Steps (each timed): build the demo dataset (or reuse it), pre-train stage 0 and stage 1 (when the
pre-training application is installed), fine-tune and evaluate the tiny model - question only
(images blanked) and from the pre-trained weights (from scratch as well with ``--with-scratch``, or
instead without pre-training) - then compare them with the majority-answer baseline on the test
split and write a report (``DIR/report``: ``results.md``, ``results.json`` and pictures).

Only standard-library modules are imported at module level, so building the ``amif`` parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
FINETUNE_CONFIG = CONFIG_DIR / "demo" / "finetune.yaml"
PRETRAIN_CONFIGS = (CONFIG_DIR / "demo" / "pretrain_stage0.yaml", CONFIG_DIR / "demo" / "pretrain_stage1.yaml")

# Question types whose answer needs the synthetic lesions in the image (the "lesion questions" row).
LESION_TYPES = ("presence", "count", "position", "size")
# Models of the comparison, in table order: key -> column label.
MODELS = {
    "majority": "majority answer",
    "question_only": "question only",
    "scratch": "AMiF from scratch",
    "pretrained": "AMiF pre-trained",
}
# Fine-tuning runs: key -> extra overrides. The default demo runs question_only and pretrained
# (scratch instead of pretrained without pre-training; both with with_scratch=True).
FINETUNE_RUNS = {
    "question_only": ["data.blank_images=true"],
    "scratch": ["run.freeze_image_encoder=false"],  # a random image encoder has to train
    "pretrained": [],  # + run.init_from=<stage 1 model>
}
DEFAULT_SCALE = 2.0  # twice the base build: the lesion questions need more images than the anatomy ones
QUICK_SCALE = 0.3
QUICK_FINETUNE = ["run.max_epochs=1"]
QUICK_PRETRAIN = ["run.max_epochs=1"]
DATA_MARKER = "data_build.json"


# ----------------------------------------------------------------------------------------- baselines

def majority_answers(train: Iterable[Any]) -> dict[tuple[str | None, str | None], str]:
    """Most frequent training answer per (question type, answer type), plus fallbacks.

    Keys: ``(question_type, answer_type)``, ``(question_type, None)`` and ``(None, None)`` (all
    questions). Answers are compared after :func:`amif.answers.normalize_answer`; ties go to the
    alphabetically first normalised answer, so the result does not depend on record order.
    """
    from amif.answers import normalize_answer

    counts: dict[tuple[str | None, str | None], Counter] = defaultdict(Counter)
    for r in train:
        a = normalize_answer(r.answer)
        at = (r.answer_type or "").upper() or None
        counts[(r.question_type, at)][a] += 1
        counts[(r.question_type, None)][a] += 1
        counts[(None, None)][a] += 1
    return {k: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for k, c in counts.items()}


def majority_predict(answers: Mapping[tuple[str | None, str | None], str], record: Any) -> str:
    """The majority answer for one record: its (type, answer type) group, else its type, else all."""
    at = (record.answer_type or "").upper() or None
    for key in ((record.question_type, at), (record.question_type, None), (None, None)):
        if key in answers:
            return answers[key]
    return ""


def majority_baseline(train: Sequence[Any], test: Sequence[Any]) -> tuple[list[dict], dict[str, Any]]:
    """Score the majority-answer baseline on ``test``: (per-question rows, metrics like evaluate_dataset)."""
    from amif.answers import exact_match
    from amif.metrics import VQAAccuracy, summarize

    answers = majority_answers(train)
    qtypes = sorted({r.question_type for r in list(train) + list(test) if r.question_type})
    metric = VQAAccuracy(question_types=qtypes)
    preds = [majority_predict(answers, r) for r in test]
    if test:
        metric.update(preds, [r.answer for r in test], [r.answer_type for r in test],
                      [r.question_type for r in test])
    rows = [{"qid": r.qid, "question": r.question, "answer": r.answer, "prediction": p,
             "correct": exact_match(p, r.answer), "answer_type": r.answer_type, "question_type": r.question_type}
            for r, p in zip(test, preds)]
    return rows, summarize(metric.compute())


def group_accuracy(rows: Iterable[Mapping[str, Any]], question_types: Sequence[str] = LESION_TYPES
                   ) -> tuple[float | None, int]:
    """Accuracy and count over the per-question rows whose question type is in ``question_types``."""
    sel = [bool(r["correct"]) for r in rows if r.get("question_type") in question_types]
    return (sum(sel) / len(sel) if sel else None), len(sel)


def add_lesion_metric(metrics: dict[str, Any], rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add ``lesion`` / ``n_lesion`` (the lesion-question aggregate) to a metrics dict, in place."""
    acc, n = group_accuracy(rows)
    metrics["lesion"], metrics["n_lesion"] = acc, n
    return metrics


# ------------------------------------------------------------------------------------------- table

def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def table_rows(columns: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(metric key, label) of the table rows present in ``columns``."""
    rows = [("overall", "overall"), ("open", "open"), ("closed", "closed"),
            ("lesion", f"lesion questions ({', '.join(LESION_TYPES)})")]
    qts = {k.split("/", 1)[1] for c in columns.values() for k in c if k.startswith("qtype/") and c.get(f"n_{k}")}
    ordered = [q for q in LESION_TYPES if q in qts] + sorted(qts - set(LESION_TYPES))
    rows += [(f"qtype/{q}", f"type: {q}") for q in ordered]
    return [(k, lab) for k, lab in rows if any(c.get(f"n_{k}") for c in columns.values())]


def format_demo_table(columns: Mapping[str, Mapping[str, Any]], reference: tuple[str, str] | None = None) -> str:
    """Markdown table of test accuracies (percent): one column per model, rows per question group.

    ``reference = (model, baseline)`` adds a column with the difference model - baseline in points.
    """
    names = list(columns)
    head = ["group", "n"] + names
    if reference:
        head.append(f"{reference[0]} - {reference[1]}")
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for key, label in table_rows(columns):
        n = next((c.get(f"n_{key}") for c in columns.values() if c.get(f"n_{key}") is not None), None)
        cells = [label, "-" if n is None else str(n)] + [_pct(c.get(key)) for c in columns.values()]
        if reference:
            a, b = columns[reference[0]].get(key), columns[reference[1]].get(key)
            cells.append("-" if a is None or b is None else f"{100 * (a - b):+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- steps

def machine_info() -> dict[str, Any]:
    """Where the demo ran: platform, CPU model and count, torch threads, accelerator."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "usable_cpus": usable, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def ensure_data(data_dir: Path, *, seed: int, scale: float, progress: bool = True,
                say: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the demo dataset into ``data_dir`` unless a build with the same seed and scale is there."""
    from amif_demo.data import build_demo_dataset
    from amif_demo.data.build import BUILD_VERSION

    marker = data_dir.parent / DATA_MARKER
    if marker.is_file() and all((data_dir / f"{s}.jsonl").is_file() for s in ("train", "val", "test")):
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if old.get("seed") == seed and old.get("scale") == scale and old.get("build_version") == BUILD_VERSION:
            say(f"reusing the demo dataset in {data_dir} (seed {seed}, scale {scale})")
            old["reused"] = True
            return old
    marker.unlink(missing_ok=True)
    summary = build_demo_dataset(data_dir, seed=seed, scale=scale, progress=progress)
    marker.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    summary["reused"] = False
    return summary


def pretraining_available() -> bool:
    """True when the pre-training application (``amif_train.pretrain``) imports."""
    try:
        import amif_train.pretrain  # noqa: F401
    except ImportError:
        return False
    return True


def _fresh(folder: Path) -> Path:
    """Empty a run folder of a previous demo run (the loggers and checkpoints would mix otherwise)."""
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def run_pretraining(runs: Path, data_dir: Path, model_cfg: Any, overrides: Sequence[str] = (),
                    configs: Sequence[Path] = PRETRAIN_CONFIGS,
                    before: Callable[[Path], None] | None = None,
                    keep_checkpoints: bool = False) -> list[dict[str, Any]]:
    """Run the pre-training stages in order into ``runs/<config stem>``, each from the previous model.

    The model section is replaced by the fine-tuning model's, so the weights always fit it. ``before``
    is called with each config path before its stage starts (progress messages). The Lightning
    checkpoints are deleted after each stage (the ``model`` folder stays) unless ``keep_checkpoints``.
    """
    from amif_train.config import PretrainConfig, load_config
    from amif_train.pretrain import run_pretrain

    summaries: list[dict[str, Any]] = []
    for path in configs:
        if before is not None:
            before(path)
        ov = [f"data.root={data_dir}", f"run.output_dir={_fresh(runs / path.stem)}"]
        if summaries:
            ov.append(f"run.init_from={summaries[-1]['model_dir']}")
        cfg = load_config(path, ov + list(overrides), cls=PretrainConfig)
        cfg.model = model_cfg
        t0 = time.time()
        summary = run_pretrain(cfg)
        if not keep_checkpoints:
            _drop_checkpoints(Path(cfg.run.output_dir))
        summary["name"] = path.stem
        summary["seconds"] = round(time.time() - t0, 1)
        summaries.append(summary)
        print(f"{path.stem}: {summary['seconds']} s", flush=True)
    return summaries


def _drop_checkpoints(run_dir: Path) -> None:
    """Delete a finished run's Lightning checkpoints (hundreds of MB each); ``model/`` holds the weights."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def finetune_config(config: Path, data_dir: Path, out_dir: Path, overrides: Sequence[str]) -> Any:
    from amif_train.config import load_config

    return load_config(config, [f"data.root={data_dir}", f"run.output_dir={out_dir}", *overrides])


# ------------------------------------------------------------------------------------------- the demo

def run_demo(
    out: str | Path,
    *,
    scale: float | None = None,
    seed: int = 0,
    quick: bool = False,
    pretrain: bool | None = None,
    config: str | Path = FINETUNE_CONFIG,
    overrides: Sequence[str] = (),
    pretrain_overrides: Sequence[str] = (),
    pretrain_configs: Sequence[Path] = PRETRAIN_CONFIGS,
    progress: bool = True,
    plots: bool = True,
    keep_checkpoints: bool = False,
    with_scratch: bool = False,
    parallel: bool | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out`` and return what ``DIR/report/results.json`` holds.

    ``pretrain``: None runs the pre-training stages when the pre-training application is installed;
    ``overrides`` / ``pretrain_overrides`` are ``key=value`` config overrides of the fine-tuning runs
    and the pre-training stages. ``quick`` uses less data and one epoch per training run. The runs'
    Lightning checkpoints are deleted once a run is done (its ``model`` folder stays) unless
    ``keep_checkpoints``. AMiF is fine-tuned from the pre-training; ``with_scratch`` adds a run from
    scratch (the only AMiF run when there is no pre-training). ``parallel`` (default: when pre-training
    runs and two CPU cores are usable) trains the question-only baseline in a second process while
    the main process pre-trains (``amif_demo.background``; its output goes to its ``train.log``).
    """
    from amif_demo.logs import quiet_libraries

    quiet_libraries()
    from amif.data.records import load_split
    from amif_demo.background import start_finetune, usable_cpus
    from amif_train.finetune import run_finetune

    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scale = float(scale if scale is not None else (QUICK_SCALE if quick else DEFAULT_SCALE))
    overrides = (QUICK_FINETUNE if quick else []) + list(overrides)
    pretrain_overrides = (QUICK_PRETRAIN if quick else []) + list(pretrain_overrides)
    if pretrain is None:
        pretrain = pretraining_available()
        if not pretrain:
            print("note: the pre-training application (amif_train.pretrain) is not installed: "
                  "skipping pre-training and the 'AMiF pre-trained' model")
    run_keys = ["question_only"] + (["scratch"] if with_scratch or not pretrain else []) + (["pretrained"] if pretrain else [])
    n_steps = 2 + (len(pretrain_configs) if pretrain else 0) + len(run_keys)
    step_no = 0
    timings: dict[str, float] = {}

    def step(title: str) -> None:
        nonlocal step_no
        step_no += 1
        print(f"\n=== [{step_no}/{n_steps}] {title} ===", flush=True)

    # 1. data
    step(f"demo dataset (seed {seed}, scale {scale})")
    t0 = time.time()
    data_dir = out / "data"
    data_summary = ensure_data(data_dir, seed=seed, scale=scale, progress=progress)
    timings["data"] = round(time.time() - t0, 1)
    records = {s: load_split(data_dir, s) for s in ("train", "val", "test")}
    print(f"{len(records['train'])} / {len(records['val'])} / {len(records['test'])} train / val / test questions "
          f"({timings['data']} s)")

    # 2. pre-training (and the question-only baseline in a second process meanwhile)
    runs = out / "runs"
    base_cfg = finetune_config(Path(config), data_dir, runs / "scratch", overrides)
    if not progress:
        base_cfg.run.progress_bar = False
    if parallel is None:  # worth it only when pre-training runs meanwhile and a second core is free
        parallel = pretrain and usable_cpus() >= 2
    background = {}
    if parallel:
        from functools import partial

        from amif_demo.report import question_only_extras

        bg_dir = _fresh(runs / "question_only")
        bg_cfg = finetune_config(Path(config), data_dir, bg_dir, [*overrides, *FINETUNE_RUNS["question_only"]])
        bg_cfg.run.progress_bar = False
        # its reliance and calibration passes run there too, while the main process still pre-trains
        background["question_only"] = start_finetune(bg_cfg, bg_dir / "train.log",
                                                     then=partial(question_only_extras, str(out)))
        print(f"question-only baseline: training in a second process meanwhile (log: {bg_dir / 'train.log'})")
    pretrain_summaries: list[dict[str, Any]] = []
    if pretrain:
        po = list(pretrain_overrides) + ([] if progress else ["run.progress_bar=false"])
        pretrain_summaries = run_pretraining(runs, data_dir, base_cfg.model, po, pretrain_configs,
                                             before=lambda p: step(f"pre-training {p.stem}"),
                                             keep_checkpoints=keep_checkpoints)
        for s in pretrain_summaries:
            timings[s["name"]] = s["seconds"]

    # 3. fine-tuning runs
    results: dict[str, dict[str, Any]] = {}
    rows_by_model: dict[str, list[dict]] = {}
    done: dict[str, dict[str, Any]] = {}  # reliance and calibration from the second process
    # a run in the second process is collected first: training the next one meanwhile would put two
    # fine-tuning runs on the two cores at once, which slows both down more than it overlaps
    for key in run_keys:
        step(f"fine-tune and test: {MODELS[key]}")
        if key in background:
            run_dir = runs / key
            print("trained in the second process; waiting for it to finish", flush=True)
            summary = background[key].result()
            timings[key] = summary["seconds"]
            if "then" in summary:
                done[key] = summary.pop("then")
                timings[f"{key}_reliance"] = summary.pop("then_seconds")
        else:
            extra = FINETUNE_RUNS[key]
            if key == "pretrained":
                extra = [*extra, f"run.init_from={pretrain_summaries[-1]['model_dir']}"]
                print(f"encoders and fusion start from {pretrain_summaries[-1]['model_dir']}")
            run_dir = _fresh(runs / key)
            cfg = finetune_config(Path(config), data_dir, run_dir, [*overrides, *extra])
            if not progress:
                cfg.run.progress_bar = False
            t0 = time.time()
            summary = run_finetune(cfg)
            timings[key] = round(time.time() - t0, 1)
        if not keep_checkpoints:
            _drop_checkpoints(run_dir)
        doc = json.loads((run_dir / "results_test.json").read_text(encoding="utf-8"))
        rows_by_model[key] = doc["predictions"]
        results[key] = add_lesion_metric(dict(summary["test"]), doc["predictions"])
        results[key]["val"] = summary.get("val")
        print(f"{MODELS[key]}: {timings[key]} s", flush=True)

    # 4. explanations, image reliance, calibration; majority baseline, report
    step("report")
    from amif_demo.report import demo_extras

    extras = demo_extras(out, records, rows_by_model, MODELS, main_model(results), plots=plots, done=done)
    timings["explain"] = extras["seconds"]
    maj_rows, maj = majority_baseline(records["train"], records["test"])
    results = {"majority": add_lesion_metric(maj, maj_rows), **results}
    rows_by_model = {"majority": maj_rows, **rows_by_model}
    report = write_report(out, results=results, rows_by_model=rows_by_model, records=records,
                          data_summary=data_summary, pretrain_summaries=pretrain_summaries, timings=timings,
                          scale=scale, seed=seed, quick=quick, config=str(config), overrides=list(overrides),
                          plots=plots, t_start=t_start, background=list(background), extras=extras)
    return report


def main_model(results: Mapping[str, Any]) -> str:
    """The AMiF model the report centres on: pre-trained when it exists, else from scratch."""
    return "pretrained" if "pretrained" in results else "scratch"


def verdict(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """How much each AMiF model gains over the question-only model (points; targets 10 overall, 20 lesion)."""
    out: dict[str, Any] = {"targets": {"overall": 10.0, "lesion": 20.0}}
    q = results.get("question_only")
    for key in ("scratch", "pretrained"):
        if key not in results or q is None:
            continue
        gains = {}
        for m in ("overall", "lesion"):
            a, b = results[key].get(m), q.get(m)
            gains[m] = None if a is None or b is None else round(100 * (a - b), 1)
        gains["meets_targets"] = all(gains[m] is not None and gains[m] >= out["targets"][m] for m in ("overall", "lesion"))
        out[key] = gains
    return out


def write_report(
    out: Path,
    *,
    results: dict[str, dict[str, Any]],
    rows_by_model: dict[str, list[dict]],
    records: dict[str, list[Any]],
    data_summary: dict[str, Any],
    pretrain_summaries: list[dict[str, Any]],
    timings: dict[str, float],
    scale: float,
    seed: int,
    quick: bool,
    config: str,
    overrides: list[str],
    plots: bool,
    t_start: float,
    background: Sequence[str] = (),
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Print the results table and write ``DIR/report``: results.md, results.json and the pictures.
    ``background``: the runs trained in a second process during pre-training (their time overlaps)."""
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    columns = {MODELS[k]: v for k, v in results.items()}
    main = main_model(results)
    reference = (MODELS[main], MODELS["question_only"]) if "question_only" in results else None
    table = format_demo_table(columns, reference)
    images: dict[str, str] = {}
    t0 = time.time()
    if plots:
        from amif_demo import report as plots_mod

        run_dirs = {MODELS[k]: out / "runs" / k for k in results if (out / "runs" / k / "logs").is_dir()}
        pre_dirs = {s["name"]: Path(s["output_dir"]) for s in pretrain_summaries}
        images = plots_mod.write_all(
            report_dir, run_dirs=run_dirs, pretrain_dirs=pre_dirs, columns=columns,
            table_rows=table_rows(columns), data_dir=out / "data", test_records=records["test"],
            predictions={MODELS[k]: v for k, v in rows_by_model.items()}, main=MODELS[main],
            baseline=MODELS["question_only"] if "question_only" in results else None, seed=seed,
        )
    if extras:
        images.update(extras.get("images") or {})
    breakdown = _breakdown(rows_by_model, records["test"], main, seed)
    timings["report"] = round(time.time() - t0, 1)
    timings["total"] = round(time.time() - t_start, 1)
    machine = machine_info()
    gains = verdict(results)
    doc = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": sys.argv,
        "machine": machine,
        "settings": {"scale": scale, "seed": seed, "quick": quick, "config": config, "overrides": overrides},
        "data": {k: data_summary.get(k) for k in ("out_dir", "seed", "scale", "image_size", "images", "questions",
                                                  "question_types", "sources", "source_details", "build_version",
                                                  "reused", "seconds")},
        "seconds": timings,
        "background_runs": list(background),
        "lesion_types": list(LESION_TYPES),
        "models": {k: MODELS[k] for k in results},
        "metrics": results,
        "gain_over_question_only": gains,
        "pretraining": [{k: s.get(k) for k in ("name", "model_dir", "initial", "final", "global_steps", "seconds")}
                        for s in pretrain_summaries],
        "images": images,
        "table_markdown": table,
        "explain": {k: v for k, v in (extras or {}).items() if k != "images"},
        "by_source": breakdown["by_source"],
        "bootstrap": breakdown["bootstrap"],
    }
    (report_dir / "results.json").write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    (report_dir / "results.md").write_text(_markdown(doc, table, results, report_dir), encoding="utf-8")
    n_test = len(records["test"])
    print(f"\nDemo test split: {n_test} questions, accuracy in percent\n\n{table}\n")
    for key in ("scratch", "pretrained"):
        g = gains.get(key)
        if g:
            print(f"{MODELS[key]} vs question only: {g['overall']:+.1f} points overall, "
                  f"{g['lesion']:+.1f} on lesion questions (targets +10 / +20)")
    if extras:
        from amif_demo.report import format_extras

        print(format_extras(extras) + "\n")
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + _overlap_note(doc))
    print(f"report: {report_dir / 'results.md'}")
    return doc


def _overlap_note(doc: Mapping[str, Any]) -> str:
    runs = doc.get("background_runs") or []
    return f" ({', '.join(runs)} ran in a second process during pre-training)" if runs else ""


def _markdown(doc: dict[str, Any], table: str, results: Mapping[str, Any], report_dir: Path) -> str:
    m, d = doc["machine"], doc["data"]
    lines = [
        "# amif demo results",
        "",
        f"- date: {doc['created']}",
        f"- machine: {m['platform']}; CPU: {m['cpu']}; {m['cpu_count']} CPUs ({m['usable_cpus']} usable), "
        f"torch {m['torch']} with {m['torch_threads']} threads" + (f"; GPU: {m['cuda']}" if m.get("cuda") else ""),
        f"- command: `{' '.join(doc['command'])}`",
        f"- settings: scale {doc['settings']['scale']}, seed {doc['settings']['seed']}, quick {doc['settings']['quick']}, "
        f"fine-tuning config `{doc['settings']['config']}`"
        + (f" with `{' '.join(doc['settings']['overrides'])}`" if doc["settings"]["overrides"] else ""),
        f"- data: {_split_counts(d.get('questions'))} train / val / test questions on "
        f"{_split_counts(d.get('images'))} images" + (" (reused build)" if d.get("reused") else ""),
        "- wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in doc["seconds"].items()) + _overlap_note(doc),
        "",
        "## Test accuracy (%)",
        "",
        table,
        "",
        "- *majority answer*: the most frequent training answer of the question's type and answer type "
        "(open / closed); no image, no question wording.",
        "- *question only*: the same model and training with every image replaced by a blank one.",
        f"- *lesion questions*: the questions of types {', '.join(LESION_TYPES)} together; they cannot be "
        "answered without looking at the image (the demo data balances their answers).",
        "- open / closed: the dataset's answer types; *n*: number of test questions in the row.",
        "",
    ]
    for key, g in doc["gain_over_question_only"].items():
        if key == "targets" or not g:
            continue
        status = "meets" if g["meets_targets"] else "does NOT meet"
        lines.append(f"**{MODELS[key]}** vs question only: {g['overall']:+.1f} points overall, "
                     f"{g['lesion']:+.1f} points on lesion questions - {status} the demo targets (+10 / +20).")
        lines.append("")
    if doc.get("explain"):
        from amif_demo.report import format_extras

        lines += ["## Why: explanations, image reliance, calibration", "", format_extras(doc["explain"]), ""]
    lines += _breakdown_markdown(doc)
    if doc["pretraining"]:
        lines += ["## Pre-training", ""]
        for s in doc["pretraining"]:
            ini, fin = s.get("initial") or {}, s.get("final") or {}
            rm = (f"validation retrieval recall mean {100 * ini['recall_mean']:.1f} -> {100 * fin['recall_mean']:.1f}"
                  if "recall_mean" in ini and "recall_mean" in fin else "")
            lines.append(f"- {s['name']}: {s.get('global_steps')} steps, {s.get('seconds')} s; {rm}")
        lines.append("")
    if doc["images"]:
        lines += ["## Pictures", ""]
        for title, path in doc["images"].items():
            rel = os.path.relpath(path, report_dir)
            lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    lines += ["All metrics of every model: `results.json`; per-question predictions: "
              "`runs/<model>/results_test.json`.", ""]
    return "\n".join(lines)


def _breakdown(rows_by_model: Mapping[str, list[dict]], test: Sequence[Any], main: str, seed: int) -> dict[str, Any]:
    """Accuracy per source and study-level bootstrap intervals of every group (:mod:`amif_demo.stats`)."""
    from amif_demo import stats as demo_stats

    ref = (main, "question_only") if "question_only" in rows_by_model and main in rows_by_model else None
    return {"by_source": demo_stats.per_source_accuracy(rows_by_model, test, LESION_TYPES),
            "bootstrap": {"reference": list(ref) if ref else None, "level": 0.95, "resampled": "test studies",
                          "groups": demo_stats.study_bootstrap(rows_by_model, test, LESION_TYPES, ref, seed=seed)}}


def _breakdown_markdown(doc: Mapping[str, Any]) -> list[str]:
    from amif_demo import stats as demo_stats

    boot, models = doc["bootstrap"], doc["models"]
    ref = tuple(boot["reference"]) if boot.get("reference") else None
    main = ref[0] if ref else next(iter(models))
    return [
        "## Study-level 95 % intervals", "",
        "Accuracy (%) [2.5th, 97.5th percentile] over 2,000 resamplings of the test *studies* (a study's "
        "views and questions are resampled together); the gain column resamples both models together.", "",
        demo_stats.format_bootstrap_table(boot["groups"], models, ref), "",
        "## Accuracy per source", "",
        demo_stats.format_source_table(doc["by_source"], models), "",
        f"Per question type, {models[main]} (% correct, questions in parentheses):", "",
        demo_stats.format_source_type_table(doc["by_source"], main), "",
    ]


def _split_counts(counts: Mapping[str, Any] | None) -> str:
    counts = counts or {}
    return " / ".join(str(counts.get(k, "?")) for k in ("train", "val", "test"))


# ------------------------------------------------------------------------------------------- command line

def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``amif demo``."""
    p = sub.add_parser(
        "demo", help="build the demo dataset, pre-train, fine-tune and evaluate the tiny model, write a report",
        description="Runs the whole method on the embedded demo dataset and compares AMiF with a majority-answer "
                    "and a question-only baseline. Writes DIR/data, DIR/runs and DIR/report.",
    )
    p.add_argument("--out", required=True, help="output folder (DIR)")
    p.add_argument("--scale", type=float, default=None,
                   help=f"multiply the number of demo images (default {DEFAULT_SCALE:g}, or {QUICK_SCALE} with --quick)")
    p.add_argument("--seed", type=int, default=0, help="demo dataset seed")
    p.add_argument("--quick", action="store_true", help="less data and one epoch per training run (a smoke test)")
    p.add_argument("--no-pretrain", action="store_true", help="skip pre-training (and the pre-trained model)")
    p.add_argument("--config", default=str(FINETUNE_CONFIG), help="fine-tuning config of the three AMiF runs")
    p.add_argument("--with-scratch", action="store_true",
                   help="also fine-tune AMiF from scratch (without the pre-training) for comparison")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the runs' Lightning checkpoints (by default only each run's model/ folder stays)")
    p.add_argument("--sequential", action="store_true",
                   help="train the question-only baseline after pre-training instead of in a second process")
    p.add_argument("--pretrain-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override of both pre-training stages, e.g. run.max_epochs=2")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="fine-tuning overrides, e.g. run.max_epochs=3")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.out, scale=args.scale, seed=args.seed, quick=args.quick,
             pretrain=False if args.no_pretrain else None, config=args.config, overrides=args.overrides,
             pretrain_overrides=args.pretrain_option, keep_checkpoints=args.keep_checkpoints,
             with_scratch=args.with_scratch, parallel=False if args.sequential else None)
    return 0
