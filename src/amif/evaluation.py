"""Batch prediction over a VQA dataset and scoring with :class:`amif.metrics.VQAAccuracy`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from amif.answers import exact_match, normalize_answer
from amif.calibration import calibration_from_rows
from amif.data.collate import collate_vqa
from amif.data.vqa_dataset import VQADataset
from amif.errors import ConfigError
from amif.metrics import VQAAccuracy, summarize
from amif.models.vqa import AMiFVQA


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` is CUDA when it is available, else the CPU.

    A malformed name or a CUDA device on a machine without one is a :class:`ConfigError`.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not a torch device name (e.g. cpu, cuda, cuda:1)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def autocast_dtype_for(precision: str | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of a Lightning precision name for evaluation on ``device`` (None: full precision).
    Only GPUs get one: ranking on the CPU stays in float32."""
    if device.type != "cuda" or not precision:
        return None
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


@torch.no_grad()
def predict_batch(
    model: AMiFVQA,
    batch: dict[str, Any],
    top_k: int = 5,
    rank_k: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> list[dict]:
    """Ranked answers for one collated batch: a list (one per question) of ``{answers, probs}``.

    The batch goes to the model's device; ``autocast_dtype`` (e.g. ``torch.bfloat16`` on a GPU) runs
    the ranking under autocast.
    """
    device = next(model.parameters()).device
    ids, mask = model.tokenize_questions(batch["question"])
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        ranked = model.rank(batch["pixel_values"].to(device), ids.to(device), mask.to(device), k=rank_k,
                            image_index=batch.get("image_index"))
    out = []
    for idx, probs in zip(ranked.indices.tolist(), ranked.probs.tolist()):
        out.append({
            "answers": [model.answer_candidates[i] for i in idx[:top_k]],
            "probs": [round(p, 6) for p in probs[:top_k]],
        })
    return out


@torch.no_grad()
def evaluate_dataset(
    model: AMiFVQA,
    dataset: VQADataset,
    *,
    batch_size: int = 32,
    top_k: int = 5,
    question_types: Sequence[str] = (),
    num_workers: int = 0,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """Predict every record of ``dataset`` on the model's device (``autocast_dtype``: see
    :func:`predict_batch`); returns (per-question results, metrics as Python numbers)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_vqa, num_workers=num_workers)
    metric = VQAAccuracy(question_types=list(question_types), sync_on_compute=False)  # one process scores all
    candidates = {normalize_answer(c) for c in model.answer_candidates}
    rows: list[dict] = []
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc="evaluate", unit="batch")
    for batch in iterator:
        preds = predict_batch(model, batch, top_k=top_k, autocast_dtype=autocast_dtype)
        best = [p["answers"][0] for p in preds]
        metric.update(best, batch["answer"], batch["answer_type"], batch["question_type"])
        for i, p in enumerate(preds):
            rows.append({
                "qid": batch["qid"][i],
                "question": batch["question"][i],
                "answer": batch["answer"][i],
                "prediction": best[i],
                "correct": exact_match(best[i], batch["answer"][i]),
                "answer_type": batch["answer_type"][i],
                "question_type": batch["question_type"][i],
                "answer_in_candidates": normalize_answer(batch["answer"][i]) in candidates,
                "ranked": [{"answer": a, "prob": pr} for a, pr in zip(p["answers"], p["probs"])],
            })
    metrics = summarize(metric.compute())
    metrics["n_answer_not_in_candidates"] = sum(not r["answer_in_candidates"] for r in rows)
    metrics["ece"] = calibration_from_rows(rows)["ece"]  # top-1 probability, 15 bins (amif.calibration)
    return rows, metrics
