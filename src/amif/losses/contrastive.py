"""Soft-label contrastive losses of AMiF pre-training (global alignment).

Notation (all features L2-normalised): a local batch of ``B`` samples per process, ``N = world_size * B``
gathered samples (``N = B`` in one process). Student: image view 1 ``a``, image view 2 ``a'``, text ``b``
(local, ``[B, D]``) and their gathered versions ``a_all``, ``a'_all``, ``b_all`` (``[N, D]``, gathered
**with** gradient, see :func:`amif.distributed.gather_with_grad`). Teacher (frozen, e.g. BiomedCLIP):
``u``, ``u'``, ``v`` local and ``u_all``, ``u'_all``, ``v_all`` gathered (no gradient), with logit scale
``s = exp(teacher.logit_scale)``. ``pos_index[i]`` is the column of local row ``i``'s positive in the
gathered matrix (:func:`amif.distributed.positive_index`, ``rank * B + i``).

One direction of the soft-label loss (:func:`contrastive_direction`)::

    S = q @ k_allᵀ                          # student similarities, [B, N]
    P = soft_targets(s * tq @ tk_allᵀ, pos_index, lam, mode)   # teacher probabilities, [B, N]
    L = (1/B) Σ_i KL(P_i || softmax(S_i / τ))

With no teacher the direction falls back to cross-entropy with label smoothing against ``pos_index``.
Half-precision inputs are computed in float32 (safe under autocast); float64 stays float64.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amif.errors import ConfigError

__all__ = [
    "LearnableTemperature",
    "TargetMode",
    "contrastive_direction",
    "counterfactual_contrast",
    "hard_label_contrastive",
    "image_image_loss",
    "image_text_loss",
    "kl_contrastive",
    "soft_targets",
    "text_text_loss",
]

TargetMode = Literal["logit", "mixture"]
Temperature = float | Tensor
Scale = float | Tensor


class LearnableTemperature(nn.Module):
    """A learnable contrastive temperature ``τ``, stored as ``log τ``, clamped to ``[min, max]``.

    ``forward()`` returns ``exp(clamp(log τ, log min, log max))`` (a 0-d tensor). The parameter is named
    ``log_temperature``: exclude it from weight decay, either through :meth:`no_weight_decay` or by the
    rule "no decay for parameters whose name contains ``temperature``". The clamp has zero gradient
    outside the range, so call :meth:`clamp_` after each optimizer step (as CLIP does for its logit
    scale) to keep the parameter inside and its gradient alive.
    """

    def __init__(self, init: float = 0.07, min: float = 0.01, max: float = 0.5) -> None:
        super().__init__()
        if not (0.0 < min <= init <= max):
            raise ConfigError(
                f"temperature needs 0 < min <= init <= max, got min={min} init={init} max={max}"
            )
        self.min_value = float(min)
        self.max_value = float(max)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init), dtype=torch.float32))

    def forward(self) -> Tensor:
        return self.log_temperature.clamp(math.log(self.min_value), math.log(self.max_value)).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the stored parameter into ``[log min, log max]`` in place (call after optimizer steps)."""
        self.log_temperature.clamp_(math.log(self.min_value), math.log(self.max_value))

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of the parameters that must not get weight decay."""
        return {"log_temperature"}

    def extra_repr(self) -> str:
        return f"min={self.min_value}, max={self.max_value}"


def _work(t: Tensor) -> Tensor:
    """Half-precision inputs are computed in float32; float32 and float64 are kept."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _check_rows(sim: Tensor, pos_index: Tensor, what: str) -> None:
    if sim.dim() != 2:
        raise ValueError(f"{what} must be [B, N], got shape {tuple(sim.shape)}")
    if pos_index.dim() != 1 or pos_index.shape[0] != sim.shape[0]:
        raise ValueError(f"pos_index must be [B={sim.shape[0]}], got shape {tuple(pos_index.shape)}")
    if pos_index.dtype != torch.long:
        raise ValueError(f"pos_index must be a LongTensor, got {pos_index.dtype}")


def soft_targets(
    teacher_logits: Tensor, pos_index: Tensor, lam: float = 0.01, mode: TargetMode = "logit"
) -> Tensor:
    """Teacher soft labels ``[B, N]`` (rows sum to 1), with a boost ``lam`` on each row's positive.

    Args:
        teacher_logits: ``[B, N]`` teacher logits ``s * cos(teacher_i, teacher_all_j)``; detached here.
        pos_index: ``[B]`` LongTensor, column of row ``i``'s positive (``rank * B + i`` under DDP).
        lam: the "flexibility" weight λ.
        mode: ``"logit"`` (published code): ``softmax(teacher_logits + lam * I)`` with ``I[i, pos_index[i]] = 1``;
            ``"mixture"``: ``(1 - lam) * softmax(teacher_logits) + lam * onehot(pos_index)`` (needs 0 <= lam <= 1).
    """
    _check_rows(teacher_logits, pos_index, "teacher_logits")
    logits = _work(teacher_logits.detach())
    index = pos_index[:, None]
    if mode == "logit":
        boost = torch.full((logits.shape[0], 1), float(lam), dtype=logits.dtype, device=logits.device)
        return logits.scatter_add(1, index, boost).softmax(dim=-1)
    if mode == "mixture":
        if not 0.0 <= lam <= 1.0:
            raise ConfigError(f"soft-label mode 'mixture' needs 0 <= lam <= 1, got {lam}")
        onehot = torch.zeros_like(logits).scatter_(1, index, 1.0)
        return (1.0 - lam) * logits.softmax(dim=-1) + lam * onehot
    raise ConfigError(f"unknown soft-label mode {mode!r}; expected 'logit' or 'mixture'")


def kl_contrastive(student_sim: Tensor, targets: Tensor, temperature: Temperature) -> Tensor:
    """``(1/B) Σ_i KL(targets_i || softmax(student_sim_i / τ))`` (``reduction='batchmean'``), a scalar.

    ``student_sim`` ``[B, N]`` cosine similarities (with gradient), ``targets`` ``[B, N]`` probabilities.
    """
    if student_sim.shape != targets.shape or student_sim.dim() != 2:
        raise ValueError(
            f"student_sim {tuple(student_sim.shape)} and targets {tuple(targets.shape)} must be equal [B, N]"
        )
    log_p = F.log_softmax(_work(student_sim) / temperature, dim=-1)
    return F.kl_div(log_p, targets.detach().to(log_p.dtype), reduction="batchmean")


def hard_label_contrastive(
    student_sim: Tensor, pos_index: Tensor, temperature: Temperature, label_smoothing: float = 0.1
) -> Tensor:
    """Fallback without a teacher: ``CE(student_sim / τ, pos_index)`` with label smoothing, mean over rows."""
    _check_rows(student_sim, pos_index, "student_sim")
    return F.cross_entropy(_work(student_sim) / temperature, pos_index, label_smoothing=label_smoothing)


def contrastive_direction(
    query: Tensor,
    keys_all: Tensor,
    pos_index: Tensor,
    temperature: Temperature,
    *,
    teacher_query: Tensor | None = None,
    teacher_keys_all: Tensor | None = None,
    teacher_scale: Scale | None = None,
    lam: float = 0.01,
    mode: TargetMode = "logit",
    label_smoothing: float = 0.1,
) -> Tensor:
    """One direction of the contrastive loss, a scalar.

    ``S = query @ keys_allᵀ`` (``[B, N]``). With a teacher: ``kl_contrastive(S, soft_targets(teacher_scale *
    tq @ tk_allᵀ, pos_index, lam, mode), τ)`` where ``tq``/``tk_all`` are the teacher features, re-normalised
    here (idempotent; it also fixes unnormalised teacher outputs). Without (both teacher tensors None):
    ``hard_label_contrastive(S, pos_index, τ, label_smoothing)``.

    Args:
        query: ``[B, D]`` local student features (L2-normalised, with gradient).
        keys_all: ``[N, D]`` gathered student features of the other side (L2-normalised).
        pos_index: ``[B]`` column of each row's positive in ``keys_all``.
        temperature: τ, a float or a 0-d tensor (e.g. ``LearnableTemperature()()``).
        teacher_query / teacher_keys_all: ``[B, Dt]`` / ``[N, Dt]`` teacher features, or both None.
        teacher_scale: ``s = exp(teacher logit_scale)``; required with a teacher.
        lam, mode: see :func:`soft_targets`. label_smoothing: for the hard-label fallback only.
    """
    if query.dim() != 2 or keys_all.dim() != 2 or query.shape[1] != keys_all.shape[1]:
        raise ValueError(
            f"query [B, D] and keys_all [N, D] expected, got {tuple(query.shape)} and {tuple(keys_all.shape)}"
        )
    dtype = torch.promote_types(_work(query).dtype, _work(keys_all).dtype)
    with torch.autocast(device_type=query.device.type, enabled=False):
        sim = query.to(dtype) @ keys_all.to(dtype).T
    if teacher_query is None and teacher_keys_all is None:
        return hard_label_contrastive(sim, pos_index, temperature, label_smoothing)
    if teacher_query is None or teacher_keys_all is None or teacher_scale is None:
        raise ValueError("soft labels need teacher_query, teacher_keys_all and teacher_scale together")
    if teacher_query.shape[0] != query.shape[0] or teacher_keys_all.shape[0] != keys_all.shape[0]:
        raise ValueError(
            f"teacher rows {teacher_query.shape[0]}/{teacher_keys_all.shape[0]} must match student rows "
            f"{query.shape[0]}/{keys_all.shape[0]}"
        )
    with torch.no_grad(), torch.autocast(device_type=query.device.type, enabled=False):
        tq = F.normalize(teacher_query.detach().to(dtype), dim=-1)
        tk = F.normalize(teacher_keys_all.detach().to(dtype), dim=-1)
        scale = (
            teacher_scale.detach().to(dtype) if isinstance(teacher_scale, Tensor) else float(teacher_scale)
        )
        targets = soft_targets(scale * (tq @ tk.T), pos_index, lam, mode)
    return kl_contrastive(sim, targets, temperature)


def image_text_loss(
    image: Tensor,
    text: Tensor,
    image_all: Tensor,
    text_all: Tensor,
    pos_index: Tensor,
    temperature: Temperature,
    *,
    teacher_image: Tensor | None = None,
    teacher_text: Tensor | None = None,
    teacher_image_all: Tensor | None = None,
    teacher_text_all: Tensor | None = None,
    teacher_scale: Scale | None = None,
    lam: float = 0.01,
    mode: TargetMode = "logit",
    label_smoothing: float = 0.1,
) -> Tensor:
    """Inter-modal image-text loss ``L_itgc``, a scalar.

    ``L = ½ [KLC(a·b_allᵀ, s·u·v_allᵀ) + KLC(b·a_allᵀ, s·v·u_allᵀ)]`` (i2t and t2i), each with the λ boost
    at ``pos_index``; hard-label CE in both directions when all teacher tensors are None.
    ``image``/``text`` are ``[B, D]`` local, ``image_all``/``text_all`` ``[N, D]`` gathered; the teacher
    tensors are the same for the teacher's embeddings.
    """
    common = dict(teacher_scale=teacher_scale, lam=lam, mode=mode, label_smoothing=label_smoothing)
    i2t = contrastive_direction(
        image,
        text_all,
        pos_index,
        temperature,
        teacher_query=teacher_image,
        teacher_keys_all=teacher_text_all,
        **common,
    )
    t2i = contrastive_direction(
        text,
        image_all,
        pos_index,
        temperature,
        teacher_query=teacher_text,
        teacher_keys_all=teacher_image_all,
        **common,
    )
    return 0.5 * (i2t + t2i)


def counterfactual_contrast(
    image: Tensor, text: Tensor, counterfactual: Tensor, valid: Tensor, temperature: Temperature
) -> Tensor:
    """Each image against its own caption and that caption's counterfactual twin, a scalar.

    ``L = mean over valid i of CE([a_i·b_i, a_i·b̃_i] / τ, 0)``: the twin (``counterfactual [B, D]``,
    e.g. the same caption with the lesion's side exchanged) is a negative the batch almost never holds,
    and a teacher that scores it like the caption cannot say it is wrong, so this term asks for the one
    detail that tells them apart. ``valid [B]`` bool marks the rows with a twin; with none the loss is 0
    (no host synchronisation either way).
    """
    a = _work(image)
    logits = torch.stack([(a * _work(text)).sum(-1), (a * _work(counterfactual)).sum(-1)], dim=-1) / temperature
    w = valid.to(device=logits.device, dtype=logits.dtype)
    ce = F.cross_entropy(logits, torch.zeros_like(valid, dtype=torch.long, device=logits.device), reduction="none")
    return (ce * w).sum() / w.sum().clamp_min(1.0)


def image_image_loss(
    view1: Tensor,
    view2: Tensor,
    view1_all: Tensor,
    view2_all: Tensor,
    pos_index: Tensor,
    temperature: Temperature,
    *,
    teacher_view1: Tensor | None = None,
    teacher_view2: Tensor | None = None,
    teacher_view1_all: Tensor | None = None,
    teacher_view2_all: Tensor | None = None,
    teacher_scale: Scale | None = None,
    lam: float = 0.01,
    mode: TargetMode = "logit",
    label_smoothing: float = 0.1,
) -> Tensor:
    """Multi-view image-image loss ``L_imvc``, a scalar.

    ``L = ½ [KLC(a·a'_allᵀ, s·u·u'_allᵀ) + KLC(a'·a_allᵀ, s·u'·u_allᵀ)]``, with ``a``/``a'`` the two views
    (``[B, D]`` local, ``[N, D]`` gathered) and ``u``/``u'`` their teacher embeddings.
    """
    common = dict(teacher_scale=teacher_scale, lam=lam, mode=mode, label_smoothing=label_smoothing)
    d12 = contrastive_direction(
        view1,
        view2_all,
        pos_index,
        temperature,
        teacher_query=teacher_view1,
        teacher_keys_all=teacher_view2_all,
        **common,
    )
    d21 = contrastive_direction(
        view2,
        view1_all,
        pos_index,
        temperature,
        teacher_query=teacher_view2,
        teacher_keys_all=teacher_view1_all,
        **common,
    )
    return 0.5 * (d12 + d21)


def text_text_loss(
    text: Tensor,
    text_all: Tensor,
    pos_index: Tensor,
    temperature: Temperature,
    *,
    teacher_text: Tensor | None = None,
    teacher_text_all: Tensor | None = None,
    teacher_scale: Scale | None = None,
    lam: float = 0.01,
    mode: TargetMode = "logit",
    label_smoothing: float = 0.1,
) -> Tensor:
    """Uni-modal text-text loss ``L_utgc`` (relational distillation), a scalar.

    ``L = KLC(b·b_allᵀ, s·v·v_allᵀ)``. The student's positive similarity is trivially 1, so the loss
    transfers the teacher's text-text similarity structure. Without a teacher it reduces to a CE that only
    pushes other texts away (a uniformity term); the published code had no such fallback.
    """
    return contrastive_direction(
        text,
        text_all,
        pos_index,
        temperature,
        teacher_query=teacher_text,
        teacher_keys_all=teacher_text_all,
        teacher_scale=teacher_scale,
        lam=lam,
        mode=mode,
        label_smoothing=label_smoothing,
    )
