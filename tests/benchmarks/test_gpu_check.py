"""``benchmarks/gpu_check.py --tiny`` runs end to end on the CPU, so the full-size GPU check cannot rot."""

import json
import math
import subprocess
import sys

from helpers import REPO


def test_gpu_check_tiny_writes_a_complete_report(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu", "--steps", "2",
           "--warmup", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names[:2] == ["stage-0 pre-training step", "stage-1 pre-training step (OT + ITM)"]
    assert names[2].startswith("fine-tuning step") and names[3].startswith("ranking at k = 32")
    assert report["matmul_peak_tflops"] > 0 and report["vqa_parameters"] > 0
    for r in report["results"]:
        assert r["flops"] > 0 and r["step_s"] > 0 and len(r["step_s_all"]) == 2
        assert math.isclose(r["mfu"], r["flops"] / r["step_s"] / (report["matmul_peak_tflops"] * 1e12))
        assert r["peak_gib"] is None  # no GPU memory on the CPU
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| stage-0 pre-training step | 4 |" in md and "MFU" in md
