"""Image reliance: accuracy with the real, blank and shuffled images, and how many answers change.

A model that reads the image loses accuracy when the image is blanked (every pixel the dataset's
blank value, as the question-only baseline sees) or shuffled (each question gets another question's
image), and changes many answers. A model that answers from the question alone changes none. The
shuffle is a fixed permutation (``seed``) that gives every question an image of another file wherever
the data allow; the number of questions that kept their own image is reported.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from amif.models.vqa import AMiFVQA

CONDITIONS = ("blank", "shuffled")


def shuffled_order(images: Sequence[str], seed: int = 0) -> list[int]:
    """A permutation ``p`` such that question ``i`` gets the image of question ``p[i]``: questions are
    grouped by image in a random group order and shifted by the largest group's size, so each lands
    in another group unless one image has more than half of the questions."""
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[img].append(i)
    keys = list(groups)
    rng.shuffle(keys)
    order = [i for k in keys for i in groups[k]]
    n = len(order)
    shift = max((len(g) for g in groups.values()), default=0) % max(n, 1)
    perm = [0] * n
    for t, i in enumerate(order):
        perm[i] = order[(t + shift) % n]
    return perm


class ReplacedImages(Dataset):
    """``dataset`` with every image blanked (``"blank"``) or taken from another question (``"shuffled"``)."""

    def __init__(self, dataset: Any, mode: str, seed: int = 0):
        if mode not in CONDITIONS:
            raise ValueError(f"mode must be one of {CONDITIONS}, got {mode!r}")
        self.dataset, self.mode = dataset, mode
        images = [r.image for r in dataset.records]
        self.order = shuffled_order(images, seed) if mode == "shuffled" else list(range(len(images)))
        self.n_same_image = sum(images[i] == images[j] for i, j in enumerate(self.order)) if mode == "shuffled" else 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.mode == "blank":
            import torch

            item = dict(self.dataset[index]) if self.dataset.blank_images else self._no_image(index)
            size = self.dataset.image_size
            item["pixel_values"], item["blank"] = torch.zeros(3, size, size), True
            return item
        item = self._no_image(index)
        other = self.dataset[self.order[index]]
        item["pixel_values"], item["blank"] = other["pixel_values"], other.get("blank", False)
        return item

    def _no_image(self, index: int) -> dict[str, Any]:
        """The item's labels without loading its image."""
        r = self.dataset.records[index]
        return {"question": self.dataset.questions[index], "answer": r.answer, "qid": r.qid,
                "answer_type": r.answer_type, "question_type": r.question_type}


def _group_keys(row: dict) -> list[str]:
    keys = ["overall"]
    if row.get("question_type"):
        keys.append(f"qtype/{row['question_type']}")
    return keys


def changed_share(real: Sequence[dict], other: Sequence[dict]) -> dict[str, float | None]:
    """Share of questions whose best answer differs between two evaluations, overall and per question type."""
    changed: dict[str, list[bool]] = defaultdict(list)
    for a, b in zip(real, other, strict=True):
        if a["qid"] != b["qid"]:
            raise ValueError(f"evaluations are not aligned: {a['qid']!r} vs {b['qid']!r}")
        for k in _group_keys(a):
            changed[k].append(a["prediction"] != b["prediction"])
    return {k: sum(v) / len(v) for k, v in changed.items()}


def image_reliance(model: AMiFVQA, dataset: Any, real_rows: Sequence[dict], *, batch_size: int = 32,
                   question_types: Sequence[str] = (), seed: int = 0, progress: bool = False,
                   known: dict[str, tuple[Sequence[dict], dict[str, Any]]] | None = None,
                   autocast_dtype: Any = None) -> dict[str, Any]:
    """Evaluate ``dataset`` again with blank and with shuffled images.

    Returns ``{"blank": metrics, "shuffled": metrics, "sensitivity": {"blank": {group: share},
    "shuffled": {...}}, "n_same_image_shuffled": n}``; ``metrics`` as :func:`amif.evaluation.evaluate_dataset`
    gives them (accuracy overall, open / closed, per question type). ``real_rows`` are the rows of
    the evaluation with the real images; ``known`` maps a condition to its (rows, metrics) when they
    were computed already (the question-only baseline's own test run is the blank condition);
    ``autocast_dtype`` as in :func:`amif.evaluation.evaluate_dataset`.
    """
    from amif.evaluation import evaluate_dataset

    out: dict[str, Any] = {"sensitivity": {}}
    for mode in CONDITIONS:
        ds = ReplacedImages(dataset, mode, seed)
        if known and mode in known:
            rows, metrics = known[mode]
        else:
            rows, metrics = evaluate_dataset(model, ds, batch_size=batch_size, question_types=question_types,
                                             progress=progress, autocast_dtype=autocast_dtype)
        out[mode] = metrics
        out["sensitivity"][mode] = changed_share(real_rows, rows)
        if mode == "shuffled":
            out["n_same_image_shuffled"] = ds.n_same_image
    return out


def format_reliance_table(columns: dict[str, dict[str, Any]], real: dict[str, dict[str, Any]]) -> str:
    """Markdown table per model: accuracy (%) with real / blank / shuffled images and the share (%) of
    answers that change when the image is blanked / shuffled, overall and per question type.
    ``columns``: model -> :func:`image_reliance` result; ``real``: model -> metrics with the real images."""
    head = "| model | group | n | real | blank | shuffled | changed (blank) | changed (shuffled) |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, rel in columns.items():
        groups = ["overall"] + sorted(k for k in rel["sensitivity"]["blank"] if k != "overall")
        for g in groups:
            n = real[name].get(f"n_{g}")
            cells = [name, g.replace("qtype/", "type: "), "-" if n is None else str(n)]
            cells += [_pct(m.get(g)) for m in (real[name], rel["blank"], rel["shuffled"])]
            cells += [_pct(rel["sensitivity"][c].get(g)) for c in CONDITIONS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"
