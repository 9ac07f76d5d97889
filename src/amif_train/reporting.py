"""Results files and console tables."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from amif_train.run_info import git_commit

ROWS = (
    ("overall", "overall"),
    ("open", "open (answer_type)"),
    ("closed", "closed (answer_type)"),
    ("open_yesno", "open (yes/no rule)"),
    ("closed_yesno", "closed (yes/no rule)"),
)


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
