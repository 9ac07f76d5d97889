"""Console quieting for the demo's training runs, in the main process and in the background one."""

from __future__ import annotations

import logging
import os
import warnings

# Lightning warnings that say nothing about the demo: it runs few DataLoader workers on purpose, trains on
# the CPU even where a GPU exists, and reuses its run folders.
_IGNORED_WARNINGS = (
    ".*does not have many workers.*",
    ".*GPU available but not used.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*LeafSpec.*is deprecated.*",
    ".*Experiment logs directory .* exists and is not empty.*",
)


def quiet_libraries() -> None:
    """Hide library chatter that says nothing about the demo (the ``amif`` CLI does the same for its commands)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
