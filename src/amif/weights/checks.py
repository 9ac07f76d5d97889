"""Shape and key checks of a state dict against a model, before anything is loaded into it."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from amif.errors import CheckpointError

__all__ = ["check_state_dict", "shape_of"]


def shape_of(t: Tensor | torch.Size | tuple) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, Tensor) else tuple(t)


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True, context: str,
    allow_missing: bool = False,
) -> None:
    """Raise ``CheckpointError`` unless ``state_dict`` fits ``model``.

    Every tensor whose shape differs is listed with the expected and the found shape. With ``strict``,
    missing and unexpected keys are listed too (``allow_missing`` keeps the check on unexpected keys
    but lets the file hold a subset of the model's tensors). ``context`` (the folder or file the weights came from)
    starts the message. The model may live on the meta device; only shapes are compared.
    """
    expected = model.state_dict()
    wrong = [
        f"  {name}: expected {shape_of(expected[name])}, got {shape_of(t)}"
        for name, t in state_dict.items()
        if name in expected and shape_of(expected[name]) != shape_of(t)
    ]
    missing = [name for name in expected if name not in state_dict] if strict and not allow_missing else []
    unexpected = [name for name in state_dict if name not in expected] if strict else []
    if not (wrong or missing or unexpected):
        return
    parts = [f"{context}: the weights do not fit {type(model).__name__}"]
    if wrong:
        parts.append(f"{len(wrong)} tensor(s) with the wrong shape:\n" + "\n".join(wrong))
    if missing:
        parts.append(f"{len(missing)} missing tensor(s):\n" + "\n".join(f"  {n}" for n in missing))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s):\n" + "\n".join(f"  {n}" for n in unexpected))
    raise CheckpointError("\n".join(parts))

