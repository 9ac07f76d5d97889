"""Batch prediction over a VQA dataset and scoring with :class:`amif.metrics.VQAAccuracy`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from amif.answers import exact_match, normalize_answer
from amif.calibration import calibration_from_rows
from amif.data.vqa_dataset import VQADataset, collate_vqa
from amif.metrics import VQAAccuracy, summarize
from amif.models.vqa import AMiFVQA


@torch.no_grad()
def predict_batch(model: AMiFVQA, batch: dict[str, Any], top_k: int = 5, rank_k: int | None = None) -> list[dict]:
    """Ranked answers for one collated batch: a list (one per question) of ``{answers, probs}``."""
    device = next(model.parameters()).device
    ids, mask = model.tokenize_questions(batch["question"])
    ranked = model.rank(batch["pixel_values"].to(device), ids.to(device), mask.to(device), k=rank_k)
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
) -> tuple[list[dict], dict[str, Any]]:
    """Predict every record of ``dataset``; returns (per-question results, metrics as Python numbers)."""
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
        preds = predict_batch(model, batch, top_k=top_k)
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
