"""VQA accuracy with count states only, so it is exact under DDP (states are summed across ranks).

Groups reported by :class:`VQAAccuracy`:

* ``overall`` - every question;
* ``open`` / ``closed`` - by the dataset's own ``answer_type`` ("OPEN" / "CLOSED"); questions whose
  answer type is None count in ``overall`` only;
* ``open_yesno`` / ``closed_yesno`` - the published code's rule (docs/method.md#open-and-closed-questions): CLOSED when the ground
  truth normalises to exactly "yes" or "no", OPEN otherwise (every question is in one of them);
* ``qtype/<name>`` - per question type given at construction; unknown or missing types go to
  ``qtype/other``.

A prediction is correct when :func:`amif.answers.exact_match` says so. Each accuracy comes with
its count ``n_<key>`` (``n_qtype/<name>`` for question types); an empty group has accuracy NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from amif.answers import exact_match, is_yes_no

__all__ = ["VQAAccuracy", "summarize", "GROUPS"]

GROUPS = ("overall", "open", "closed", "open_yesno", "closed_yesno")
_OVERALL, _OPEN, _CLOSED, _OPEN_YN, _CLOSED_YN = range(5)
OTHER_QTYPE = "other"


class VQAAccuracy(Metric):
    """Exact-match VQA accuracy by group and question type (see the module docstring).

    States: ``correct`` / ``total`` (int64, one slot per group in :data:`GROUPS`) and
    ``qtype_correct`` / ``qtype_total`` (int64, ``len(question_types) + 1`` slots, the last is
    "other"). If "other" is itself one of ``question_types``, unknown types are counted in it and the
    last slot stays empty.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, question_types: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        types = [str(t) for t in question_types]
        if len(set(types)) != len(types):
            raise ValueError(f"question_types has duplicates: {types}")
        self.question_types: tuple[str, ...] = tuple(types)
        self._qtype_index = {t: i for i, t in enumerate(types)}
        self._other_index = self._qtype_index.get(OTHER_QTYPE, len(types))
        n = len(GROUPS)
        self.add_state("correct", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        q = len(types) + 1
        self.add_state("qtype_correct", default=torch.zeros(q, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("qtype_total", default=torch.zeros(q, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        preds: Sequence[str],
        targets: Sequence[str],
        answer_types: Sequence[str | None],
        question_types: Sequence[str | None] | None = None,
    ) -> None:
        """Count one batch. ``answer_types`` holds "OPEN" / "CLOSED" (any case) or None per question."""
        n = len(preds)
        if len(targets) != n or len(answer_types) != n:
            raise ValueError(
                f"preds, targets and answer_types differ in length ({n}, {len(targets)}, {len(answer_types)})"
            )
        if question_types is not None and len(question_types) != n:
            raise ValueError(f"question_types has length {len(question_types)}, expected {n}")
        correct = [0] * len(GROUPS)
        total = [0] * len(GROUPS)
        q_correct = [0] * self.qtype_total.numel()
        q_total = [0] * self.qtype_total.numel()
        for i in range(n):
            truth = targets[i]
            ok = int(exact_match(preds[i], truth))
            groups = [_OVERALL, _CLOSED_YN if is_yes_no(truth) else _OPEN_YN]
            at = answer_types[i]
            if at is not None:
                at_norm = str(at).strip().upper()
                if at_norm == "OPEN":
                    groups.append(_OPEN)
                elif at_norm == "CLOSED":
                    groups.append(_CLOSED)
                else:
                    raise ValueError(f"answer_type {at!r} (question {i} of the batch) is not OPEN, CLOSED or None")
            for g in groups:
                total[g] += 1
                correct[g] += ok
            qt = None if question_types is None else question_types[i]
            k = self._qtype_index.get(str(qt), self._other_index) if qt is not None else self._other_index
            q_total[k] += 1
            q_correct[k] += ok
        device = self.total.device
        self.correct += torch.tensor(correct, dtype=torch.long, device=device)
        self.total += torch.tensor(total, dtype=torch.long, device=device)
        self.qtype_correct += torch.tensor(q_correct, dtype=torch.long, device=device)
        self.qtype_total += torch.tensor(q_total, dtype=torch.long, device=device)

    def _names(self) -> list[tuple[str, int]]:
        names = [(f"qtype/{t}", i) for i, t in enumerate(self.question_types)]
        if self._other_index == len(self.question_types):
            names.append((f"qtype/{OTHER_QTYPE}", self._other_index))
        return names

    def compute(self) -> dict[str, torch.Tensor]:
        """Accuracies (float32, NaN for an empty group) and counts ``n_<key>`` (int64)."""
        out: dict[str, torch.Tensor] = {}

        def acc(c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if int(t) == 0:
                return torch.tensor(float("nan"), dtype=torch.float32, device=t.device)
            return (c.double() / t.double()).float()

        for g, name in enumerate(GROUPS):
            out[name] = acc(self.correct[g], self.total[g])
            out[f"n_{name}"] = self.total[g].clone()
        for name, i in self._names():
            out[name] = acc(self.qtype_correct[i], self.qtype_total[i])
            out[f"n_{name}"] = self.qtype_total[i].clone()
        return out


def summarize(results: dict[str, Any]) -> dict[str, float | int | None]:
    """Turn :meth:`VQAAccuracy.compute` output into JSON-ready Python numbers (NaN -> None)."""
    out: dict[str, float | int | None] = {}
    for key, value in results.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = value.item() if value.numel() == 1 else value.tolist()
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, float) and math.isnan(value):
            out[key] = None
        else:
            out[key] = value
    return out
