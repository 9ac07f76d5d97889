"""Run bookkeeping: every run writes its resolved config, the git commit and package versions."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from amif.configuration import save_config

PACKAGES = ("amif", "torch", "transformers", "lightning", "torchmetrics", "safetensors", "numpy", "pillow", "pydicom")


def git_commit(cwd: Path | None = None) -> dict[str, Any]:
    """Commit hash and dirty flag of the source checkout (None when not in a git checkout)."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_run_info(output_dir: str | Path, cfg: Any, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.yaml`` and ``run_info.json`` into ``output_dir``; returns the folder."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    info = {
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": git_commit(),
        "packages": package_versions(),
        **(extra or {}),
    }
    (out / "run_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return out


def csv_log_version(out: Path, resume: bool) -> str:
    """CSV logger version of a run in ``out``: "" normally; ``resumeN`` (the first free N) for a resumed
    run whose ``logs/metrics.csv`` exists, because Lightning's CSV logger would empty that file."""
    if not resume or not (out / "logs" / "metrics.csv").is_file():
        return ""
    n = 1
    while (out / "logs" / f"resume{n}").exists():
        n += 1
    return f"resume{n}"
