"""Sub-commands beyond finetune / evaluate / predict: data preparation, pre-training, teacher caches,
explanations and the web app."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from amif.data.prepare import prepare_dataset
    from amif.data.prepare.common import format_summary

    options: dict = {"skip_bad": args.skip_bad, "link": not args.copy, "overwrite": args.overwrite}
    for key in ("layout", "val_fraction", "seed", "languages", "categories"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    summary = prepare_dataset(args.name, Path(args.src), Path(args.out), **options)
    print(format_summary(summary))
    from amif.data.check import check_dataset
    from amif.data.prepare import canonical_name

    # Every prepared dataset is checked at once. VQA-RAD's official split asks test questions about
    # training images, so shared images are warnings there (shared image-question pairs stay leaks).
    shared_ok = canonical_name(args.name) == "vqa-rad"
    report = check_dataset(args.out, allow_shared_images=shared_ok)
    print("\n" + report.to_text())
    return 1 if (report.leaks or not report.ok) else 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from amif.data.check import check_dataset

    report = check_dataset(args.dir, allow_shared_images=args.allow_shared_images, decode_images=not args.no_decode)
    print(report.to_text())
    return 1 if (report.leaks or not report.ok) else 0


def add_data(sub: argparse._SubParsersAction) -> None:
    from amif_train.plugins import DATA_COMMANDS, plugin_commands

    p = sub.add_parser("data", help="build, prepare and check datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    for add in plugin_commands(DATA_COMMANDS):  # e.g. ``amif data demo`` from amif_demo
        add(dsub)
    d = dsub.add_parser("prepare", help="convert an official dataset (vqa-rad, slake, pathvqa, vqa-med-2019)")
    d.add_argument("name", help="vqa-rad | slake | pathvqa | vqa-med-2019")
    d.add_argument("--src", required=True, help="folder of the downloaded official distribution")
    d.add_argument("--out", required=True, help="output folder (project record format)")
    d.add_argument("--skip-bad", action="store_true", help="skip malformed rows (counted and reported)")
    d.add_argument("--copy", action="store_true", help="copy images instead of hard-linking them")
    d.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in --out")
    d.add_argument("--layout", help="vqa-rad: auto | osf | mevf")
    d.add_argument("--val-fraction", type=float, help="vqa-rad: share of training images carved out for val")
    d.add_argument("--seed", type=int, help="vqa-rad: seed of the validation carve-out")
    d.add_argument("--languages", help="slake: en (default), 'en,zh' or all")
    d.add_argument("--categories", help="vqa-med-2019: e.g. modality,organ,plane (default: all four)")
    d.set_defaults(func=cmd_data_prepare)
    d = dsub.add_parser("check", help="check a prepared dataset for leaks between splits and bad records")
    d.add_argument("dir")
    d.add_argument("--allow-shared-images", action="store_true",
                   help="report images shared between splits as warnings (VQA-RAD's official split does this)")
    d.add_argument("--no-decode", action="store_true", help="do not decode every image")
    d.set_defaults(func=cmd_data_check)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from amif_train.config import PretrainConfig, load_config
    from amif_train.pretrain import format_summary, run_pretrain

    cfg = load_config(args.config, args.overrides, cls=PretrainConfig)
    summary = run_pretrain(cfg, resume=args.resume)
    if summary:
        print(format_summary(summary))
    return 0


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="one stage of AMiF pre-training on image-caption corpora")
    p.add_argument("--config", required=True, help="YAML pre-training file (e.g. configs/demo/pretrain_stage0.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last.ckpt")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.root=/data/demo")
    p.set_defaults(func=cmd_pretrain)


def _per_corpus(values: list[str] | None, n: int, what: str, default: list[str]) -> list[str]:
    """One value per ``--corpus``: given once (for all), once per corpus, or not at all (the default)."""
    if not values:
        return default
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise SystemExit(f"amif teacher-cache: give {what} once or once per --corpus ({n}), not {len(values)} times")
    return values


def _teacher_cache_data(args: argparse.Namespace, teacher) -> tuple[object, str]:
    """The corpora to cache: those of a pre-training config (named as the run names them) or the
    ``--corpus`` / ``--root`` pairs; returns the data and a one-line description."""
    from amif.data.pretrain_corpora import PretrainDataset, read_corpus

    if args.config:
        from amif_train.config import PretrainConfig, load_config
        from amif_train.pretrain import build_pretrain_datasets

        cfg = load_config(args.config, args.overrides, cls=PretrainConfig)
        cfg.data.val = None
        train, _, skipped, counts = build_pretrain_datasets(cfg, teacher, cfg.model.image_encoder.image_size)
        names = ", ".join(f"{c['name']} ({c['records']})" for c in counts["train"])
        return train, f"corpora {names} of {args.config}" + (f", {skipped.count} bad rows skipped" if skipped.count else "")
    if args.overrides:
        raise SystemExit("amif teacher-cache: KEY=VALUE overrides need --config")
    if not args.corpus or not args.root or len(args.corpus) != len(args.root):
        raise SystemExit("amif teacher-cache: give --config, or one --root per --corpus")
    options: dict = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"amif teacher-cache: --option {item!r} must look like KEY=VALUE")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    n = len(args.corpus)
    splits = _per_corpus(args.split, n, "--split", ["train"] * n)
    names = _per_corpus(args.name, n, "--name", list(args.corpus))
    if len(set(names)) != n:
        raise SystemExit(f"amif teacher-cache: corpus names {names} repeat; give each corpus its own --name")
    data, parts, bad = {}, [], 0
    for kind, root, split, name in zip(args.corpus, args.root, splits, names):
        corpus = read_corpus(kind, root, split=split, skip_bad=args.skip_bad, **options)
        data[name] = PretrainDataset(corpus.root, corpus.records, lambda im: im, corpus=name, multi_view=False,
                                     skip_bad=args.skip_bad)
        bad += len(corpus.skipped) + len(data[name].skipped)
        parts.append(f"{name} ({len(data[name].records)} at {root})")
    return data, "corpora " + ", ".join(parts) + (f", {bad} bad rows skipped" if bad else "")


def cmd_teacher_cache(args: argparse.Namespace) -> int:
    from amif.teachers import build_teacher_cache, load_teacher

    kwargs = {"trust_remote_code": True} if args.trust_remote_code else {}
    teacher = load_teacher(args.teacher, args.device, **kwargs)  # first: a bad teacher fails before the data
    data, what = _teacher_cache_data(args, teacher)

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} images", end="", flush=True)

    out = build_teacher_cache(teacher, data, out_path=args.out, batch_size=args.batch_size, progress=progress)
    print(f"\n{what} cached with teacher {teacher.name} in {out}")
    return 0


def add_teacher_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher-cache", help="precompute a soft-label teacher's embeddings of one or more corpora")
    p.add_argument("--config", help="a pre-training YAML: cache its data.corpora, named as the run names them")
    p.add_argument("--corpus", action="append", help="roco | medicat | mimic_cxr | pmc_oa | captions (repeatable)")
    p.add_argument("--root", action="append", help="the corpus folder (one per --corpus)")
    p.add_argument("--split", action="append",
                   help="captions: which captions_SPLIT.jsonl; else the split label (once, or once per corpus)")
    p.add_argument("--name", action="append",
                   help="corpus name the rows are keyed by (default: its kind; the run's data.corpora[i].name)")
    p.add_argument("--teacher", required=True, help="caption | an open_clip folder (BiomedCLIP) | a CLIP model folder")
    p.add_argument("--out", required=True, help="output .safetensors (a .json index is written next to it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-remote-code", action="store_true", help="for models shipped as remote code")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows (counted) instead of stopping")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="reader option, e.g. csv_name=x.csv")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="--config overrides, e.g. data.root=/data")
    p.set_defaults(func=cmd_teacher_cache)


ALL = [add_data]
ALL += [add_pretrain, add_teacher_cache]


def cmd_explain(args: argparse.Namespace) -> int:
    from amif.explain_figure import explanation_text, save_explanation_png
    from amif.inference import VQAPredictor

    predictor = VQAPredictor.from_pretrained(args.model, device=args.device)
    expl = predictor.explain(args.image, args.question, top_k=args.top_k, method=args.method)
    path = save_explanation_png(expl, args.out)
    if args.json:
        print(json.dumps({**expl.to_json(), "png": str(path)}))
    else:
        print("\n".join(explanation_text(expl)) + f"\nexplanation written to {path}")
    return 0


def add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="answer a question about one image and show why (PNG with a heatmap)")
    p.add_argument("--model", required=True, help="model folder written by finetune")
    p.add_argument("--image", required=True, help="PNG, JPEG or DICOM file")
    p.add_argument("--question", required=True)
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--method", default="tokens", choices=("tokens", "context"),
                   help="heatmap: gradient x activation on the image tokens (default) or on the decoder's context")
    p.add_argument("--json", action="store_true", help="print the explanation (arrays included) as JSON")
    p.add_argument("--device", help="torch device, e.g. cpu, cuda (default: cuda when available)")
    p.set_defaults(func=cmd_explain)


def add_serve(sub: argparse._SubParsersAction) -> None:
    """``amif serve`` (defined in :mod:`amif_train.serve`; Gradio is imported only when it runs)."""
    from amif_train.serve import add_parser

    add_parser(sub)


ALL += [add_explain, add_serve]
