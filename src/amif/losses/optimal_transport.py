"""Optimal-transport word-patch alignment (WPA) for AMiF pre-training, batched with padding masks.

Each sample ``i`` of a batch has ``n_i`` valid positions on the x side and ``m_i`` on the y side (given by
bool masks, True = valid). The transport plans use uniform marginals over the valid positions
(``1/n_i`` per valid row, ``1/m_i`` per valid column, total mass 1) and are exactly zero at padded
positions. A sample with no valid position on either side gets an all-zero plan (distance 0).
The plans are computed under ``no_grad`` on the detached cost, in float32 (float64 inputs stay float64),
with autocast switched off, so that the iterations' matrix products do not run in bf16 / fp16 under
mixed precision.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from amif.errors import ConfigError

__all__ = ["OTMethod", "cosine_cost", "ipot", "sinkhorn", "wpa_loss"]

OTMethod = Literal["ipot", "sinkhorn"]


def _valid_masks(cost: Tensor, x_mask: Tensor | None, y_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Row and column validity ``[B, n]``, ``[B, m]``; samples empty on one side become empty on both."""
    if cost.dim() != 3:
        raise ValueError(f"cost must be [B, n, m], got shape {tuple(cost.shape)}")
    b, n, m = cost.shape
    xm = (
        torch.ones(b, n, dtype=torch.bool, device=cost.device)
        if x_mask is None
        else x_mask.to(cost.device).bool()
    )
    ym = (
        torch.ones(b, m, dtype=torch.bool, device=cost.device)
        if y_mask is None
        else y_mask.to(cost.device).bool()
    )
    if xm.shape != (b, n) or ym.shape != (b, m):
        raise ValueError(
            f"masks must be [B, n]={b, n} and [B, m]={b, m}, got {tuple(xm.shape)} and {tuple(ym.shape)}"
        )
    ok = xm.any(dim=1, keepdim=True) & ym.any(dim=1, keepdim=True)
    return xm & ok, ym & ok


def _work_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def cosine_cost(x: Tensor, y: Tensor, x_mask: Tensor | None = None, y_mask: Tensor | None = None) -> Tensor:
    """Cost ``C[b, j, k] = 1 - cos(x[b, j], y[b, k])``, ``[B, n, m]``, zero where either side is padded.

    ``x`` ``[B, n, D]``, ``y`` ``[B, m, D]``; masks ``[B, n]`` / ``[B, m]`` bool (True = valid) or None.
    Differentiable; computed in float32 even under autocast.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x [B, n, D] and y [B, m, D] expected, got {tuple(x.shape)} and {tuple(y.shape)}")
    dtype = _work_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xn = F.normalize(x.to(dtype), dim=-1, eps=1e-8)
        yn = F.normalize(y.to(dtype), dim=-1, eps=1e-8)
        cost = 1.0 - torch.bmm(xn, yn.transpose(1, 2))
    b, n, m = cost.shape
    valid = torch.ones(b, n, m, dtype=torch.bool, device=x.device)
    if x_mask is not None:
        valid = valid & x_mask.to(x.device).bool()[:, :, None]
    if y_mask is not None:
        valid = valid & y_mask.to(x.device).bool()[:, None, :]
    return cost.masked_fill(~valid, 0.0)


def _safe_div(num: Tensor, den: Tensor, keep: Tensor) -> Tensor:
    ok = keep & (den > 0)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


@torch.no_grad()
def ipot(
    cost: Tensor,
    x_mask: Tensor | None = None,
    y_mask: Tensor | None = None,
    beta: float = 0.5,
    iterations: int = 50,
    k: int = 1,
) -> Tensor:
    """Inexact proximal point OT (Xie et al. 2019), batched: the plan ``T`` ``[B, n, m]`` (no gradient).

    Proximal point iterations with a KL proximity term of strength ``beta``, each solved inexactly by
    ``k`` Sinkhorn steps; converges to the *unregularised* OT plan as ``iterations`` grows::

        b = ν;  G = exp(-C / β);  T = 1
        repeat iterations:  Q = G ⊙ T;  repeat k: a = μ / (Q b);  b = ν / (Qᵀ a);  T = diag(a) Q diag(b)

    With ``k = 1`` the column marginal ``ν`` is exact after every iteration and the row marginal ``μ``
    approaches it. Not log-domain: keep ``beta`` above ~0.05 for costs in [0, 2] (each row of ``G`` is
    rescaled so that its largest entry is 1, which leaves ``T`` unchanged but avoids underflow).
    """
    if beta <= 0 or iterations < 1 or k < 1:
        raise ConfigError(f"ipot needs beta > 0, iterations >= 1, k >= 1; got {beta}, {iterations}, {k}")
    with torch.autocast(device_type=cost.device.type, enabled=False):  # float32 products, not bf16 / fp16
        return _ipot(cost, x_mask, y_mask, beta, iterations, k)


def _ipot(cost: Tensor, x_mask: Tensor | None, y_mask: Tensor | None, beta: float, iterations: int, k: int) -> Tensor:
    xm, ym = _valid_masks(cost, x_mask, y_mask)
    dtype = _work_dtype(cost)
    c = cost.detach().to(dtype)
    valid = xm[:, :, None] & ym[:, None, :]
    mu = xm.to(dtype) / xm.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)
    nu = ym.to(dtype) / ym.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)
    c_min = c.masked_fill(~valid, float("inf")).amin(dim=2, keepdim=True)
    c_min = torch.where(torch.isfinite(c_min), c_min, torch.zeros_like(c_min))
    gibbs = torch.exp(-(c - c_min) / beta).masked_fill(~valid, 0.0)
    plan = valid.to(dtype)
    b = nu.clone()
    a = mu.clone()
    for _ in range(iterations):
        q = gibbs * plan
        for _ in range(k):
            a = _safe_div(mu, torch.bmm(q, b[:, :, None]).squeeze(2), xm)
            b = _safe_div(nu, torch.bmm(q.transpose(1, 2), a[:, :, None]).squeeze(2), ym)
        plan = a[:, :, None] * q * b[:, None, :]
    return plan


@torch.no_grad()
def sinkhorn(
    cost: Tensor,
    x_mask: Tensor | None = None,
    y_mask: Tensor | None = None,
    epsilon: float = 0.1,
    iterations: int = 100,
) -> Tensor:
    """Entropic OT plan ``[B, n, m]`` (no gradient), log-domain Sinkhorn, batched with masks.

    Solves ``min_T <C, T> + ε Σ T log T`` subject to the uniform marginals, i.e. the fixed point
    ``T = exp(f_j + g_k - C_jk / ε)`` with ``f = log μ - LSE_k(g_k - C_jk / ε)`` and
    ``g = log ν - LSE_j(f_j - C_jk / ε)`` (the same problem as ``ot.sinkhorn(μ, ν, C, reg=ε)``).
    The column marginal is exact after each iteration.
    """
    if epsilon <= 0 or iterations < 1:
        raise ConfigError(f"sinkhorn needs epsilon > 0 and iterations >= 1; got {epsilon}, {iterations}")
    with torch.autocast(device_type=cost.device.type, enabled=False):  # float32 products, not bf16 / fp16
        return _sinkhorn(cost, x_mask, y_mask, epsilon, iterations)


def _sinkhorn(cost: Tensor, x_mask: Tensor | None, y_mask: Tensor | None, epsilon: float, iterations: int) -> Tensor:
    xm, ym = _valid_masks(cost, x_mask, y_mask)
    dtype = _work_dtype(cost)
    c = cost.detach().to(dtype)
    valid = xm[:, :, None] & ym[:, None, :]
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=c.device)
    log_k = (-c / epsilon).masked_fill(~valid, float("-inf"))
    log_mu = torch.where(xm, -torch.log(xm.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)), neg_inf)
    log_nu = torch.where(ym, -torch.log(ym.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)), neg_inf)
    f = torch.zeros_like(log_mu)
    g = torch.zeros_like(log_nu)
    for _ in range(iterations):
        f = torch.where(xm, log_mu - torch.logsumexp(log_k + g[:, None, :], dim=2), neg_inf)
        g = torch.where(ym, log_nu - torch.logsumexp(log_k + f[:, :, None], dim=1), neg_inf)
    return torch.exp(log_k + f[:, :, None] + g[:, None, :])


def wpa_loss(
    text_tokens: Tensor,
    image_tokens: Tensor,
    text_mask: Tensor | None = None,
    image_mask: Tensor | None = None,
    method: OTMethod = "ipot",
    beta: float = 0.5,
    iterations: int | None = None,
    k: int = 1,
    epsilon: float = 0.1,
    sinkhorn_iterations: int = 100,
) -> Tensor:
    """Word-patch alignment distance per sample, ``[B]``: ``Σ_jk C_jk T_jk`` with ``C = cosine_cost``.

    The plan ``T`` is computed without gradient on the detached cost, so the gradient flows through the
    cost only (the envelope-theorem gradient of the OT distance).

    Args:
        text_tokens: ``[B, n, D]`` fused text tokens of the **positive** pairs.
        image_tokens: ``[B, m, D]`` fused image patch tokens.
        text_mask: ``[B, n]`` bool, True for the tokens to align. The caller drops [CLS], [SEP] and padding.
        image_mask: ``[B, m]`` bool or None (all patches; the caller drops the image [CLS]).
        method: ``"ipot"`` (published choice: β=0.5, 50 iterations, k=1; solved on the image x text cost as
            the published code does) or ``"sinkhorn"`` (entropic, ``epsilon``).
        iterations: IPOT's iteration count (default 50).
        sinkhorn_iterations: Sinkhorn's iteration count (default 100).

    The caller averages over the batch and applies the loss weight (3.0 in the published config).
    """
    cost = cosine_cost(text_tokens, image_tokens, text_mask, image_mask)
    if method == "ipot":
        plan = ipot(
            cost.transpose(1, 2),
            image_mask,
            text_mask,
            beta=beta,
            iterations=50 if iterations is None else iterations,
            k=k,
        )
        plan = plan.transpose(1, 2)
    elif method == "sinkhorn":
        plan = sinkhorn(
            cost, text_mask, image_mask, epsilon=epsilon, iterations=sinkhorn_iterations
        )
    else:
        raise ConfigError(f"unknown OT method {method!r}; expected 'ipot' or 'sinkhorn'")
    return (cost * plan).sum(dim=(1, 2))
