"""Explanation, image-reliance and calibration figures of a finished demo folder, without training.

    .venv/bin/python benchmarks/explain_demo.py runs/demo            # what `amif demo` adds to its report
    .venv/bin/python benchmarks/explain_demo.py runs/demo --methods  # + lesion-hit share of both heatmap methods

Reads DIR/data and DIR/runs/<model>/{model,results_test.json}; writes DIR/report/explain_rerun.json and
the explanation sheet and reliability diagram into DIR/report (as the demo does).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from amif.data.records import load_split
from amif.inference import VQAPredictor
from amif_demo.pipeline import MODELS
from amif_demo.report import demo_extras, format_extras, lesion_hit_share


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("demo_dir")
    p.add_argument("--methods", action="store_true", help="also measure the 'context' heatmap method")
    args = p.parse_args()
    out = Path(args.demo_dir)
    records = {s: load_split(out / "data", s) for s in ("train", "val", "test")}
    rows = {}
    for key in MODELS:
        f = out / "runs" / key / "results_test.json"
        if f.is_file():
            rows[key] = json.loads(f.read_text(encoding="utf-8"))["predictions"]
    main_key = "pretrained" if "pretrained" in rows else "scratch"
    extras = demo_extras(out, records, rows, MODELS, main_key)
    print(format_extras(extras))
    print(f"\n(took {extras['seconds']} s)")
    if args.methods:
        predictor = VQAPredictor.from_pretrained(out / "runs" / main_key / "model")
        extras["lesion_hit_by_method"] = {}
        for method in ("tokens", "context"):
            t0 = time.time()
            hit = lesion_hit_share(predictor, out / "data", records["test"], method=method)
            extras["lesion_hit_by_method"][method] = hit
            print(f"method {method}: hottest patch on a lesion {100 * hit['hit_share']:.1f} % "
                  f"(random {100 * hit['random_share']:.1f} %), heat on lesion patches "
                  f"{100 * hit['heat_in_lesion']:.1f} %, n={hit['n']} ({time.time() - t0:.1f} s)")
    (out / "report" / "explain_rerun.json").write_text(json.dumps(extras, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
