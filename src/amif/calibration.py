"""Calibration of the top-1 probability: reliability bins and the expected calibration error (ECE).

The probability is the one the ranking reports for its best answer (softmax over the re-scored
candidates). Bins are equal-width on [0, 1]; ECE is the count-weighted mean of |accuracy - mean
confidence| over the non-empty bins (Guo et al., 2017; 15 bins as there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BINS = 15


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> list[dict]:
    """Per bin: ``lo``, ``hi``, ``n``, mean ``confidence`` and ``accuracy`` (None for an empty bin).

    A confidence of exactly 1.0 falls in the last bin, 0.0 in the first."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape:
        raise ValueError(f"{conf.size} confidences but {ok.size} correctness flags")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": n,
                    "confidence": float(conf[sel].mean()) if n else None,
                    "accuracy": float(ok[sel].mean()) if n else None})
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS
                               ) -> float | None:
    """ECE in [0, 1] (None for no questions)."""
    bins = reliability_bins(confidence, correct, n_bins)
    total = sum(b["n"] for b in bins)
    if not total:
        return None
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]) / total)


def calibration_from_rows(rows: Sequence[dict], n_bins: int = N_BINS) -> dict:
    """``{"ece", "n_bins", "bins"}`` from evaluation rows (``ranked[0]["prob"]`` and ``correct``)."""
    conf = [float(r["ranked"][0]["prob"]) for r in rows]
    ok = [bool(r["correct"]) for r in rows]
    return {"ece": expected_calibration_error(conf, ok, n_bins), "n_bins": n_bins,
            "bins": reliability_bins(conf, ok, n_bins)}
