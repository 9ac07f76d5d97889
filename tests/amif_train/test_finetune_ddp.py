"""Fine-tuning under Lightning DDP (2 CPU processes, gloo): validation accuracy is exact.

Lightning's default distributed sampler repeats samples to even out the ranks, which would count
some validation questions twice; amif's validation sampler does not, so the accuracy logged during
DDP training equals a single-process evaluation of the same weights.
"""

import csv
import json
import os
import subprocess
import sys

from amif.data.records import load_split, write_records

from helpers import MICRO, TINY_CONFIG, make_shapes_dataset


def test_ddp_validation_accuracy_is_exact(tmp_path):
    root = make_shapes_dataset(tmp_path / "data", n_images=20)
    val = load_split(root, "val")
    write_records(root / "val.jsonl", val[:-1])  # an odd number of questions: uneven ranks
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "amif_train.cli", "finetune", "--config", str(TINY_CONFIG), *MICRO,
           f"data.root={root}", f"run.output_dir={out}", "run.max_epochs=2", "run.batch_size=4",
           "run.eval_batch_size=2", "run.strategy=ddp", "run.devices=2", "run.accelerator=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val"]["n_overall"] == len(val) - 1
    rows = [r for r in csv.DictReader((out / "logs" / "metrics.csv").open()) if r.get("val/overall")]
    logged = [float(r["val/overall"]) for r in rows]
    assert len(logged) == 2
    assert all(float(r["val/n_questions"]) == len(val) - 1 for r in rows)  # no question counted twice
    # the selected checkpoint is the best epoch; its logged accuracy equals the exact re-evaluation
    assert abs(max(logged) - summary["val"]["overall"]) < 1e-6
