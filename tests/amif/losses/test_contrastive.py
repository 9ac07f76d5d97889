"""Soft-label contrastive losses against direct loop-based computations of their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from amif.errors import ConfigError
from amif.losses import (
    LearnableTemperature,
    contrastive_direction,
    hard_label_contrastive,
    image_image_loss,
    image_text_loss,
    kl_contrastive,
    soft_targets,
    text_text_loss,
)

# ---------------------------------------------------------------- loop references (plain Python floats)


def ref_softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def ref_targets(teacher: list[list[float]], pos: list[int], lam: float, mode: str) -> list[list[float]]:
    out = []
    for i, row in enumerate(teacher):
        if mode == "logit":
            boosted = [v + (lam if j == pos[i] else 0.0) for j, v in enumerate(row)]
            out.append(ref_softmax(boosted))
        else:
            p = ref_softmax(row)
            out.append([(1 - lam) * pj + (lam if j == pos[i] else 0.0) for j, pj in enumerate(p)])
    return out


def ref_kl(student: list[list[float]], targets: list[list[float]], tau: float) -> float:
    total = 0.0
    for s_row, t_row in zip(student, targets):
        q = ref_softmax([v / tau for v in s_row])
        total += sum(t * math.log(t / qj) for t, qj in zip(t_row, q) if t > 0)
    return total / len(student)


def ref_ce(student: list[list[float]], pos: list[int], tau: float, eps: float) -> float:
    total = 0.0
    for i, row in enumerate(student):
        q = ref_softmax([v / tau for v in row])
        n = len(row)
        total += -sum(((1 - eps) * (j == pos[i]) + eps / n) * math.log(q[j]) for j in range(n))
    return total / len(student)


def ref_dot(x: torch.Tensor, y: torch.Tensor) -> list[list[float]]:
    xs, ys = x.tolist(), y.tolist()
    return [[sum(a * b for a, b in zip(xr, yr)) for yr in ys] for xr in xs]


def ref_normalise(x: torch.Tensor) -> torch.Tensor:
    rows = []
    for r in x.tolist():
        n = math.sqrt(sum(v * v for v in r))
        rows.append([v / n for v in r])
    return torch.tensor(rows, dtype=torch.float64)


def ref_direction(q, k_all, tq, tk_all, pos, tau, scale, lam, mode) -> float:
    teacher = [[scale * v for v in row] for row in ref_dot(ref_normalise(tq), ref_normalise(tk_all))]
    return ref_kl(ref_dot(q, k_all), ref_targets(teacher, pos, lam, mode), tau)


def unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


# ---------------------------------------------------------------- temperature


def test_learnable_temperature_init_clamp_and_no_decay_name():
    t = LearnableTemperature(0.07, min=0.01, max=0.5)
    assert t().item() == pytest.approx(0.07, rel=1e-6)
    names = dict(t.named_parameters())
    assert t.no_weight_decay() == {"log_temperature"} and set(names) == {"log_temperature"}
    assert "temperature" in next(iter(names))
    with torch.no_grad():
        t.log_temperature.fill_(math.log(3.0))
    assert t().item() == pytest.approx(0.5, rel=1e-6)
    t.clamp_()
    assert t.log_temperature.item() == pytest.approx(math.log(0.5), rel=1e-6)
    t().backward()  # at the bound (after clamp_) the gradient is still alive
    assert t.log_temperature.grad is not None and t.log_temperature.grad.item() != 0.0
    with torch.no_grad():
        t.log_temperature.fill_(math.log(1e-4))
    assert t().item() == pytest.approx(0.01, rel=1e-6)
    with pytest.raises(ConfigError):
        LearnableTemperature(0.7, min=0.01, max=0.5)


# ---------------------------------------------------------------- soft targets


@pytest.mark.parametrize("mode", ["logit", "mixture"])
def test_soft_targets_match_loops_with_rank_offset(mode):
    b = 4
    n = 3 * b
    pos = 4 + torch.arange(b)  # e.g. rank 1 of 3 with B=4: positives in columns 4..7
    g = torch.Generator().manual_seed(1)
    teacher = 10 * torch.randn(b, n, generator=g, dtype=torch.float64)
    lam = 0.3
    got = soft_targets(teacher, pos, lam=lam, mode=mode)
    want = torch.tensor(ref_targets(teacher.tolist(), pos.tolist(), lam, mode), dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(b, dtype=torch.float64))


def test_soft_targets_lambda_lands_at_pos_index():
    b, n = 3, 9
    pos = 4 + torch.arange(b)
    teacher = torch.zeros(b, n)  # uniform teacher: only the boost distinguishes columns
    p = soft_targets(teacher, pos, lam=2.0, mode="logit")
    for i in range(b):
        top = int(p[i].argmax())
        assert top == int(pos[i]) and top != i
        others = torch.cat([p[i, : pos[i]], p[i, pos[i] + 1 :]])
        assert torch.allclose(others, others[0].expand_as(others))
        assert p[i, pos[i]].item() == pytest.approx(math.exp(2.0) / (math.exp(2.0) + n - 1), rel=1e-6)
    mix = soft_targets(teacher, pos, lam=0.25, mode="mixture")
    assert mix[0, pos[0]].item() == pytest.approx(0.75 / n + 0.25, rel=1e-6)
    assert mix[0, 0].item() == pytest.approx(0.75 / n, rel=1e-6)


def test_soft_targets_rejects_bad_arguments():
    with pytest.raises(ConfigError):
        soft_targets(torch.zeros(2, 4), torch.arange(2), mode="other")
    with pytest.raises(ConfigError):
        soft_targets(torch.zeros(2, 4), torch.arange(2), lam=1.5, mode="mixture")
    with pytest.raises(ValueError):
        soft_targets(torch.zeros(2, 4), torch.arange(3))


# ---------------------------------------------------------------- basic losses


def test_kl_contrastive_matches_loops():
    g = torch.Generator().manual_seed(2)
    sim = torch.rand(5, 7, generator=g, dtype=torch.float64) * 2 - 1
    targets = torch.softmax(torch.randn(5, 7, generator=g, dtype=torch.float64), dim=1)
    got = kl_contrastive(sim, targets, 0.07)
    assert got.item() == pytest.approx(ref_kl(sim.tolist(), targets.tolist(), 0.07), rel=1e-9)
    # a tensor temperature gets a gradient
    tau = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    kl_contrastive(sim, targets, tau).backward()
    assert tau.grad is not None and tau.grad.item() != 0.0


def test_hard_label_contrastive_matches_loops():
    g = torch.Generator().manual_seed(3)
    sim = torch.rand(4, 8, generator=g, dtype=torch.float64) * 2 - 1
    pos = 4 + torch.arange(4)
    got = hard_label_contrastive(sim, pos, 0.07, label_smoothing=0.1)
    assert got.item() == pytest.approx(ref_ce(sim.tolist(), pos.tolist(), 0.07, 0.1), rel=1e-9)


# ---------------------------------------------------------------- high-level helpers


def _features(b: int, n: int, d: int = 6, dt: int = 5, seed: int = 0):
    """Gathered features for N rows; the local rows are rows [b, 2b) (as on rank 1)."""
    a_all, a2_all, b_all = unit(n, d, seed=seed), unit(n, d, seed=seed + 1), unit(n, d, seed=seed + 2)
    g = torch.Generator().manual_seed(seed + 3)
    # teacher features deliberately unnormalised: the loss re-normalises them
    u_all, u2_all, v_all = (3 * torch.randn(n, dt, generator=g, dtype=torch.float64) for _ in range(3))
    sl = slice(b, 2 * b)
    return a_all, a2_all, b_all, u_all, u2_all, v_all, sl


@pytest.mark.parametrize("mode", ["logit", "mixture"])
def test_image_text_loss_matches_loops(mode):
    b, n, tau, s, lam = 3, 9, 0.07, 20.0, 0.2
    a_all, _, b_all, u_all, _, v_all, sl = _features(b, n)
    pos = b + torch.arange(b)
    got = image_text_loss(
        a_all[sl], b_all[sl], a_all, b_all, pos, tau,
        teacher_image=u_all[sl], teacher_text=v_all[sl], teacher_image_all=u_all, teacher_text_all=v_all,
        teacher_scale=s, lam=lam, mode=mode,
    )  # fmt: skip
    p = pos.tolist()
    i2t = ref_direction(a_all[sl], b_all, u_all[sl], v_all, p, tau, s, lam, mode)
    t2i = ref_direction(b_all[sl], a_all, v_all[sl], u_all, p, tau, s, lam, mode)
    assert got.item() == pytest.approx(0.5 * (i2t + t2i), rel=1e-9)


def test_image_image_and_text_text_losses_match_loops():
    b, n, tau, s, lam = 2, 6, 0.1, torch.tensor(30.0), 0.01
    a_all, a2_all, b_all, u_all, u2_all, v_all, sl = _features(b, n, seed=7)
    pos = b + torch.arange(b)
    p = pos.tolist()
    got = image_image_loss(
        a_all[sl], a2_all[sl], a_all, a2_all, pos, tau,
        teacher_view1=u_all[sl], teacher_view2=u2_all[sl], teacher_view1_all=u_all, teacher_view2_all=u2_all,
        teacher_scale=s, lam=lam,
    )  # fmt: skip
    d12 = ref_direction(a_all[sl], a2_all, u_all[sl], u2_all, p, tau, 30.0, lam, "logit")
    d21 = ref_direction(a2_all[sl], a_all, u2_all[sl], u_all, p, tau, 30.0, lam, "logit")
    assert got.item() == pytest.approx(0.5 * (d12 + d21), rel=1e-9)

    got_tt = text_text_loss(
        b_all[sl], b_all, pos, tau, teacher_text=v_all[sl], teacher_text_all=v_all, teacher_scale=s, lam=lam
    )
    want_tt = ref_direction(b_all[sl], b_all, v_all[sl], v_all, p, tau, 30.0, lam, "logit")
    assert got_tt.item() == pytest.approx(want_tt, rel=1e-9)


def test_hard_label_fallback_and_gradients():
    b, n, tau = 3, 6, 0.07
    a_all, _, b_all, *_ = _features(b, n, seed=11)
    a_all.requires_grad_(True)
    pos = b + torch.arange(b)
    sl = slice(b, 2 * b)
    got = image_text_loss(a_all[sl], b_all[sl], a_all, b_all, pos, tau, label_smoothing=0.1)
    p = pos.tolist()
    want = 0.5 * (
        ref_ce(ref_dot(a_all[sl].detach(), b_all), p, tau, 0.1)
        + ref_ce(ref_dot(b_all[sl], a_all.detach()), p, tau, 0.1)
    )
    assert got.item() == pytest.approx(want, rel=1e-9)
    got.backward()
    assert a_all.grad is not None and a_all.grad.abs().sum() > 0
    # a half-given teacher is an error
    with pytest.raises(ValueError):
        contrastive_direction(a_all[sl], b_all, pos, tau, teacher_query=a_all[sl])
    with pytest.raises(ValueError):
        contrastive_direction(a_all[sl], b_all, pos, tau, teacher_query=a_all[sl], teacher_keys_all=b_all)


def test_soft_loss_has_no_gradient_into_teacher_and_works_in_float32():
    b, n = 2, 4
    q = unit(b, 8, seed=20).float().requires_grad_(True)
    k = unit(n, 8, seed=21).float()
    tq = unit(b, 8, seed=22).float().requires_grad_(True)
    tk = unit(n, 8, seed=23).float()
    temp = LearnableTemperature()
    loss = contrastive_direction(
        q, k, torch.arange(b), temp(), teacher_query=tq, teacher_keys_all=tk, teacher_scale=torch.tensor(50.0)
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert q.grad is not None and tq.grad is None and temp.log_temperature.grad is not None
