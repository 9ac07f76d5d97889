"""Sub-commands that other installed packages add to ``amif``, found through entry points.

A package registers a callable under the entry-point group ``amif.commands`` (it receives the
top-level sub-parsers of ``amif``) or ``amif.data_commands`` (the sub-parsers of ``amif data``). The
callable adds its parser and sets ``func``; it should import only what building the parser needs, so
that ``amif --help`` stays fast and works without the plugin's optional dependencies. The demo
(``amif demo``, ``amif data demo``) is registered this way by ``amif_demo``, so that the app never
imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

COMMANDS = "amif.commands"
DATA_COMMANDS = "amif.data_commands"

Register = Callable[[argparse._SubParsersAction], None]


def plugin_commands(group: str) -> list[Register]:
    """The registration callables of ``group``, by entry-point name.

    A plugin that cannot be loaded is left out with a one-line warning naming it and the reason, so
    that one broken package does not take the whole command line down.
    """
    out = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            out.append(ep.load())
        except Exception as e:  # any failure of a third-party import is reported the same way
            print(f"amif: warning: command {ep.name!r} ({ep.value}) could not be loaded: {e}", file=sys.stderr)
    return out
