"""``amif data prepare`` converts and then checks; ``amif data check`` exits non-zero on a leak."""

import subprocess
import sys

from PIL import Image

from fixtures_official import build_slake


def _amif(*args):
    return subprocess.run([sys.executable, "-m", "amif_train.cli", *args], capture_output=True, text=True, timeout=300)


def test_prepare_runs_the_checker(tmp_path):
    src = build_slake(tmp_path / "src")
    for n in range(4):  # the fixture's images are identical bytes: give each its own content
        Image.new("L", (8, 8), 40 * n).save(src / "imgs" / f"xmlab{n}" / "source.jpg")
    proc = _amif("data", "prepare", "slake", "--src", str(src), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "train" in proc.stdout and "0 leak" in proc.stdout.lower() or "ok" in proc.stdout.lower()
    # plant a leak: a test image copied into train under another name
    out = tmp_path / "out"
    (out / "images" / "xmlab0" / "source.jpg").write_bytes((out / "images" / "xmlab3" / "source.jpg").read_bytes())
    proc = _amif("data", "check", str(out))
    assert proc.returncode == 1 and "LEAK" in proc.stdout


def test_prepare_reports_malformed_input_cleanly(tmp_path):
    src = build_slake(tmp_path / "src")
    (src / "train.json").write_text('[{"qid": 1, ')
    proc = _amif("data", "prepare", "slake", "--src", str(src), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "train.json" in proc.stderr and "Traceback" not in proc.stderr
