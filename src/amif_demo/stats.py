"""Breakdowns of the demo's test predictions: accuracy per source, study-level bootstrap intervals.

The views of a study share their lesions, and a study contributes several questions, so questions
are not independent draws: the intervals resample whole studies (with replacement) and recompute
each group's accuracy, and the gain of one model over another from the same resampled studies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Row = Mapping[str, Any]


def _groups(lesion_types: Sequence[str], qtypes: Sequence[str]) -> dict[str, Callable[[Row], bool]]:
    out: dict[str, Callable[[Row], bool]] = {
        "overall": lambda r: True,
        "open": lambda r: str(r.get("answer_type", "")).upper() == "OPEN",
        "closed": lambda r: str(r.get("answer_type", "")).upper() == "CLOSED",
        "lesion": lambda r: r.get("question_type") in lesion_types,
    }
    for q in qtypes:
        out[f"qtype/{q}"] = lambda r, q=q: r.get("question_type") == q
    return out


def _by_qid(rows: Sequence[Row]) -> dict[str, bool]:
    return {str(r["qid"]): bool(r["correct"]) for r in rows}


def per_source_accuracy(rows_by_model: Mapping[str, Sequence[Row]], records: Sequence[Any],
                        lesion_types: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{source: {"n": .., "n_lesion": .., model: {"overall": acc, "lesion": acc, "qtype/T": acc}}}``."""
    src = {r.qid: (r.extra or {}).get("source", "?") for r in records}
    qtypes = sorted({r.question_type for r in records if r.question_type})
    groups = _groups(lesion_types, qtypes)
    out: dict[str, dict[str, Any]] = {}
    for source in sorted(set(src.values())):
        recs = [r for r in records if src[r.qid] == source]
        entry: dict[str, Any] = {"n": len(recs)}
        meta = [{"question_type": r.question_type, "answer_type": r.answer_type} for r in recs]
        for name, keep in groups.items():
            if name not in ("open", "closed"):
                entry[f"n_{name}"] = sum(1 for m in meta if keep(m))
        for model, rows in rows_by_model.items():
            hit = _by_qid(rows)
            accs = {}
            for name, keep in groups.items():
                sel = [hit[r.qid] for r, m in zip(recs, meta) if keep(m) and r.qid in hit]
                if sel and name not in ("open", "closed"):
                    accs[name] = sum(sel) / len(sel)
            entry[model] = accs
        out[source] = entry
    return out


def study_bootstrap(rows_by_model: Mapping[str, Sequence[Row]], records: Sequence[Any],
                    lesion_types: Sequence[str], reference: tuple[str, str] | None = None,
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Accuracy of every model and group with a ``level`` interval from resampling test studies.

    Returns ``{group: {"n": questions, "studies": .., model: [acc, lo, hi], "gain": [d, lo, hi]}}``,
    ``gain`` being ``reference[0] - reference[1]`` over the same resampled studies (points as
    fractions). The same ``seed`` gives the same intervals.
    """
    qtypes = sorted({r.question_type for r in records if r.question_type})
    groups = _groups(lesion_types, qtypes)
    hits = {m: _by_qid(rows) for m, rows in rows_by_model.items()}
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    out: dict[str, dict[str, Any]] = {}
    for name, keep in groups.items():
        recs = [r for r in records if keep({"question_type": r.question_type, "answer_type": r.answer_type})]
        if not recs:
            continue
        studies: dict[str, list[str]] = defaultdict(list)
        for r in recs:
            studies[r.study_id or r.qid].append(r.qid)
        keys = sorted(studies)
        n_q = np.array([len(studies[k]) for k in keys], dtype=np.float64)
        idx = rng.integers(len(keys), size=(n_boot, len(keys)))
        denom = n_q[idx].sum(axis=1)
        entry: dict[str, Any] = {"n": len(recs), "studies": len(keys)}
        boots = {}
        for model, hit in hits.items():
            if not all(q in hit for k in keys for q in studies[k]):
                continue
            h = np.array([sum(hit[q] for q in studies[k]) for k in keys], dtype=np.float64)
            b = h[idx].sum(axis=1) / denom
            boots[model] = b
            entry[model] = [float(h.sum() / n_q.sum()), float(np.quantile(b, alpha)), float(np.quantile(b, 1 - alpha))]
        if reference and reference[0] in boots and reference[1] in boots:
            d = boots[reference[0]] - boots[reference[1]]
            entry["gain"] = [entry[reference[0]][0] - entry[reference[1]][0], float(np.quantile(d, alpha)),
                             float(np.quantile(d, 1 - alpha))]
        out[name] = entry
    return out


def _interval(v: Sequence[float] | None, signed: bool = False) -> str:
    if not v:
        return "-"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"{f.format(100 * v[0])} [{f.format(100 * v[1])}, {f.format(100 * v[2])}]"


def format_bootstrap_table(boot: Mapping[str, Mapping[str, Any]], models: Mapping[str, str],
                           reference: tuple[str, str] | None = None) -> str:
    """Markdown: one row per group, accuracy [95 % interval] per model and of the gain."""
    names = [m for m in models if any(m in e for e in boot.values())]
    head = ["group", "n", "studies"] + [models[m] for m in names]
    if reference:
        head.append(f"{models[reference[0]]} - {models[reference[1]]}")
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * (len(head) - 3)]
    for name, e in boot.items():
        cells = [name.replace("qtype/", "type: "), str(e["n"]), str(e["studies"])]
        cells += [_interval(e.get(m)) for m in names]
        if reference:
            cells.append(_interval(e.get("gain"), signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_source_table(per_source: Mapping[str, Mapping[str, Any]], models: Mapping[str, str]) -> str:
    """Markdown: one row per source, overall and lesion-question accuracy of every model."""
    names = [m for m in models if any(m in e for e in per_source.values())]
    head = ["source", "n", "n lesion"] + [f"{models[m]} (all / lesion)" for m in names]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * len(names)]
    for source, e in per_source.items():
        cells = [f"`{source}`", str(e["n"]), str(e.get("n_lesion", 0))]
        for m in names:
            a = e.get(m, {})
            cells.append(" / ".join("-" if a.get(k) is None else f"{100 * a[k]:.1f}" for k in ("overall", "lesion")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_source_type_table(per_source: Mapping[str, Mapping[str, Any]], model: str) -> str:
    """Markdown: one row per source, ``model``'s accuracy (questions) per question type."""
    qts = sorted({k.split("/", 1)[1] for e in per_source.values() for k in e if k.startswith("n_qtype/") and e[k]})
    lines = ["| source | " + " | ".join(qts) + " |", "|---|" + "---:|" * len(qts)]
    for source, e in per_source.items():
        acc = e.get(model, {})
        cells = [f"`{source}`"]
        for q in qts:
            n = e.get(f"n_qtype/{q}", 0)
            cells.append("-" if not n or f"qtype/{q}" not in acc else f"{100 * acc[f'qtype/{q}']:.0f} ({n})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
