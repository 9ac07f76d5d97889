"""Sub-commands beyond finetune / evaluate / predict: data preparation, demo, pre-training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_data_demo(args: argparse.Namespace) -> int:
    from amif.data.demo import build_demo_dataset

    summary = build_demo_dataset(args.out, seed=args.seed, scale=args.scale, progress=True)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from amif.data.prepare import prepare_dataset

    options = {}
    for item in args.option or []:
        key, _, value = item.partition("=")
        options[key.replace("-", "_")] = json.loads(value) if value[:1] in "[{0123456789tfn" else value
    if args.skip_bad:
        options["skip_bad"] = True
    summary = prepare_dataset(args.name, Path(args.src), Path(args.out), **options)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from amif.data.check import check_dataset

    report = check_dataset(args.dir)
    print(report.to_text())
    return 1 if report.leaks else 0


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build, prepare and check datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("demo", help="build the embedded demo dataset from real anatomy in pip packages")
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--scale", type=float, default=1.0, help="multiply the number of images")
    d.set_defaults(func=cmd_data_demo)
    d = dsub.add_parser("prepare", help="convert an official dataset (vqa-rad, slake, pathvqa, vqa-med-2019)")
    d.add_argument("name")
    d.add_argument("--src", required=True, help="folder of the downloaded official distribution")
    d.add_argument("--out", required=True)
    d.add_argument("--skip-bad", action="store_true", help="skip malformed rows (counted and reported)")
    d.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset-specific option")
    d.set_defaults(func=cmd_data_prepare)
    d = dsub.add_parser("check", help="check a prepared dataset for leaks between splits and bad records")
    d.add_argument("dir")
    d.set_defaults(func=cmd_data_check)


ALL = [add_data]
