"""Trainer callbacks shared by fine-tuning and pre-training."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from amif_train.config import RunConfig


def progress_bar(run: RunConfig) -> list[Callback]:
    """The progress bar, refreshed on logging steps only: each refresh turns the shown metrics into
    Python numbers, which waits for the GPU (Lightning's default refreshes after every batch)."""
    return [TQDMProgressBar(refresh_rate=max(1, run.log_every_n_steps))] if run.progress_bar else []
