"""The contrastive losses under 2-process DDP (gloo, CPU) equal the 1-process losses on the whole batch.

Each rank holds half of the global batch and computes mean-over-local-rows losses on gathered features.
The mean of the per-rank losses equals the single-process mean over all N rows, and the DDP-averaged
gradient (sum of per-rank gradients / world size) equals the single-process gradient, because
``gather_with_grad`` sends every rank's contribution back to the owner of each gathered row.
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from amif.distributed import gather_no_grad, gather_with_grad, positive_index, world_info
from amif.losses import (
    LearnableTemperature,
    image_image_loss,
    image_text_loss,
    sample_hard_negatives,
    text_text_loss,
)

from helpers import leave_worker

WORLD = 2
GLOBAL_BATCH = 8
D_IN, D, D_TEACHER = 6, 5, 4


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    names = ["x_img1", "x_img2", "x_txt"]
    out = {k: torch.randn(GLOBAL_BATCH, D_IN, generator=g, dtype=torch.float64) for k in names}
    for k in ["u1", "u2", "v"]:
        out[k] = F.normalize(torch.randn(GLOBAL_BATCH, D_TEACHER, generator=g, dtype=torch.float64), dim=-1)
    return out


def _model() -> nn.ModuleDict:
    torch.manual_seed(123)
    model = nn.ModuleDict(
        {
            "img": nn.Linear(D_IN, D),
            "txt": nn.Linear(D_IN, D),
            "tau1": LearnableTemperature(0.07),
            "tau2": LearnableTemperature(0.1),
            "tau3": LearnableTemperature(0.2),
        }
    )
    return model.double()


def _compute(model: nn.ModuleDict, inp: dict[str, torch.Tensor], *, wrong_positive: bool = False):
    """Losses on this process's share of the batch (all of it in one process)."""
    rank, world = world_info()
    b = GLOBAL_BATCH // world
    rows = slice(rank * b, (rank + 1) * b)
    a = F.normalize(model["img"](inp["x_img1"][rows]), dim=-1)
    a2 = F.normalize(model["img"](inp["x_img2"][rows]), dim=-1)
    t = F.normalize(model["txt"](inp["x_txt"][rows]), dim=-1)
    a_all, a2_all, t_all = gather_with_grad(a), gather_with_grad(a2), gather_with_grad(t)
    u1, u2, v = inp["u1"][rows], inp["u2"][rows], inp["v"][rows]
    u1_all, u2_all, v_all = gather_no_grad(u1), gather_no_grad(u2), gather_no_grad(v)
    pos = torch.arange(b) if wrong_positive else positive_index(b)
    soft = dict(teacher_scale=torch.tensor(20.0, dtype=torch.float64), lam=1.0)
    loss = (
        image_text_loss(
            a, t, a_all, t_all, pos, model["tau1"](),
            teacher_image=u1, teacher_text=v, teacher_image_all=u1_all, teacher_text_all=v_all, **soft,
        )
        + image_image_loss(
            a, a2, a_all, a2_all, pos, model["tau2"](),
            teacher_view1=u1, teacher_view2=u2, teacher_view1_all=u1_all, teacher_view2_all=u2_all,
            mode="mixture", **soft,
        )
        + text_text_loss(t, t_all, pos, model["tau3"](), teacher_text=v, teacher_text_all=v_all, **soft)
        + image_text_loss(a, t, a_all, t_all, pos, model["tau1"](), label_smoothing=0.1)  # hard-label fallback
    )  # fmt: skip
    with torch.no_grad():
        neg_text = sample_hard_negatives(a @ t_all.T, pos, mode="most_similar")
        neg_image = sample_hard_negatives(t @ a_all.T, pos, mode="most_similar")
    return loss, neg_text, neg_image, pos


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        model = _model()
        loss, neg_text, neg_image, pos = _compute(model, _inputs())
        loss.backward()
        grads = {}
        for name, p in model.named_parameters():
            grad = p.grad.clone()
            dist.all_reduce(grad)  # what DDP does: average the per-rank gradients
            grads[name] = grad / world
        with torch.no_grad():
            wrong, *_ = _compute(model, _inputs(), wrong_positive=True)
        torch.save(
            {"info": world_info(), "loss": loss.detach(), "wrong": wrong, "grads": grads, "neg_text": neg_text,
             "neg_image": neg_image, "pos": pos},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )  # fmt: skip
        dist.barrier()  # both ranks done with gloo before either tears it down (a teardown race aborted a rank)
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_worker()


def test_single_process_helpers_are_identities():
    assert world_info() == (0, 1)
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    y = gather_no_grad(x)
    assert torch.equal(y, x) and not y.requires_grad
    assert positive_index(4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        positive_index(0)


def test_ddp_losses_gradients_and_negatives_match_single_process(tmp_path):
    model = _model()
    ref_loss, ref_neg_text, ref_neg_image, _ = _compute(model, _inputs())
    ref_loss.backward()
    ref_loss = ref_loss.detach()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    mp.spawn(_worker, args=(WORLD, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    b = GLOBAL_BATCH // WORLD
    for r, out in enumerate(res):
        assert out["info"] == (r, WORLD)
        assert out["pos"].tolist() == list(range(r * b, (r + 1) * b))
        for name, g in ref_grads.items():
            assert float(g.abs().sum()) > 0, name
            torch.testing.assert_close(
                out["grads"][name], g, rtol=1e-5, atol=1e-7, msg=f"rank {r} grad {name}"
            )
    # each rank's loss is a mean over its B rows; their average is the mean over all N rows
    mean_loss = sum(float(out["loss"]) for out in res) / WORLD
    assert mean_loss == pytest.approx(float(ref_loss), rel=1e-5, abs=1e-7)
    assert torch.equal(torch.cat([out["neg_text"] for out in res]), ref_neg_text)
    assert torch.equal(torch.cat([out["neg_image"] for out in res]), ref_neg_image)
    # the published code's positive at column i on every rank would give a different loss
    wrong_mean = sum(float(out["wrong"]) for out in res) / WORLD
    assert abs(wrong_mean - float(ref_loss)) > 1e-2
