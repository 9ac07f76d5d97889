"""The ``amif`` command-line tool."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from amif.errors import AmifError, ConfigError


def _quiet_libraries() -> None:
    """Keep transformers' load reports and download bars out of the user's console."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def cmd_finetune(args: argparse.Namespace) -> int:
    from amif_train.config import load_config
    from amif_train.finetune import run_finetune

    cfg = load_config(args.config, args.overrides)
    run_finetune(cfg, resume=args.resume)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from amif.data.records import load_split, split_file
    from amif.data.transforms import build_eval_transform
    from amif.data.vqa_dataset import VQADataset
    from amif.evaluation import evaluate_dataset, resolve_device
    from amif.models.vqa import AMiFVQA
    from amif_train.reporting import format_table, write_results

    device = resolve_device(args.device)
    model = AMiFVQA.from_pretrained(args.model).to(device)
    records = load_split(args.data, args.split)
    size = model.image_encoder.image_size
    ds = VQADataset(args.data, records, build_eval_transform(size), image_size=size,
                    blank_images=args.blank_images, source=str(split_file(args.data, args.split)))
    qtypes = sorted({r.question_type for r in records if r.question_type})
    if args.bf16 and device.type != "cuda":
        raise ConfigError("--bf16 is for evaluation on a GPU; this run evaluates on the CPU")
    autocast = torch.bfloat16 if args.bf16 else None
    rows, metrics = evaluate_dataset(model, ds, batch_size=args.batch_size, question_types=qtypes, progress=True,
                                     autocast_dtype=autocast)
    reliance = None
    if not (args.no_image_reliance or args.blank_images):  # a blank-image run has no images to replace
        from amif.reliance import image_reliance

        reliance = image_reliance(model, ds, rows, batch_size=args.batch_size, question_types=qtypes, progress=True,
                                  autocast_dtype=autocast)
    out = Path(args.out or Path(args.model) / f"results_{args.split}.json")
    protocol = model.meta.get("protocol", "unknown")
    write_results(out, metrics=metrics, predictions=rows, split=args.split, model=str(args.model),
                  dataset=str(args.data), protocol=protocol,
                  protocol_description=model.meta.get("protocol_description"), blank_images=args.blank_images,
                  image_reliance=reliance)
    print(format_table({"AMiF": metrics}))
    if reliance is not None:
        from amif.reliance import format_reliance_table

        print("\nImage reliance (accuracy %; changed: share of answers that differ from the real-image run)\n"
              + format_reliance_table({"AMiF": reliance}, {"AMiF": metrics}))
    if metrics.get("ece") is not None:
        print(f"\nexpected calibration error of the top-1 probability (15 bins): {100 * metrics['ece']:.1f} %")
    print(f"\nprotocol: {protocol}; {metrics.get('n_answer_not_in_candidates', 0)} answers not among the candidates "
          f"(counted wrong)\nresults written to {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from amif.inference import VQAPredictor

    predictor = VQAPredictor.from_pretrained(args.model, device=args.device)
    answers = predictor.answer(args.image, args.question, top_k=args.top_k)
    if args.json:
        print(json.dumps([{"answer": a, "prob": p} for a, p in answers]))
    else:
        for rank, (a, p) in enumerate(answers, 1):
            print(f"{rank}. {a}  ({100 * p:.1f}%)")
    return 0


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. run.max_epochs=3")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available)")


def build_parser(extra: Sequence[Callable[[argparse._SubParsersAction], None]] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amif", description="AMiF for medical visual question answering")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune", help="fine-tune on a VQA dataset, select on val, evaluate on test")
    p.add_argument("--config", required=True, help="YAML experiment file")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last.ckpt")
    _add_overrides(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="evaluate a saved model on one split and write a results JSON")
    p.add_argument("--model", required=True, help="model folder written by finetune")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="results JSON (default MODEL/results_SPLIT.json)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--blank-images", action="store_true", help="question-only evaluation")
    _add_device(p)
    p.add_argument("--bf16", action="store_true", help="rank under bf16 autocast (GPU only)")
    p.add_argument("--no-image-reliance", action="store_true",
                   help="skip the blank- and shuffled-image evaluations (two more passes over the split)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="answer a question about one image (PNG/JPEG/DICOM)")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of a list")
    _add_device(p)
    p.set_defaults(func=cmd_predict)

    for add in extra:
        add(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    from amif_train import commands
    from amif_train.plugins import COMMANDS, plugin_commands

    return commands.ALL + plugin_commands(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_extra_commands())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    _quiet_libraries()
    try:
        return args.func(args)
    except AmifError as e:
        print(f"amif: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk or a folder that cannot be written: name the file, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"amif: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
