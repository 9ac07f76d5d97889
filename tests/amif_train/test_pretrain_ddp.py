"""One pre-training step on 2 CPU processes (gloo) equals the same step on 1 process with the whole batch.

Stage 0 (global losses, encoders trained) and stage 1 (all five losses, encoders frozen) on a micro model
in float64, dropout off, hard negatives in ``most_similar`` mode. Each rank holds half of the global
batch, its captions padded only to its own longest (the model pads to the global length). Checked:
the mean of the per-rank losses equals the single-process losses, every DDP-averaged gradient equals the
single-process gradient, the positives sit at the global columns ``rank * B + i`` (a large λ makes a
misplaced positive change the soft-label losses), and the hard negatives are the same global rows.
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from amif.distributed import world_info
from amif.losses.config import LossConfig
from amif.models.pretrain import AMiFPretrainModel
from amif_train.config import load_config

from helpers import MICRO, TINY_CONFIG, leave_worker

WORLD = 2
GLOBAL_BATCH = 8
LOSSES = LossConfig(lam=1.0, target_mode="logit", hard_negative_mode="most_similar", ipot_iters=20)


def _cfg():
    return load_config(TINY_CONFIG, MICRO + ["model.fusion.dropout=0.0"]).model


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = [5, 9, 4, 7, 12, 6, 3, 8]  # rank 0 holds lengths up to 9, rank 1 up to 12
    ids = torch.zeros(GLOBAL_BATCH, max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, n - 1] = 101, 102
        ids[i, 1:n - 1] = torch.randint(1000, 5000, (n - 2,), generator=g)
        mask[i, :n] = 1
    out = {"image1": torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g, dtype=torch.float64),
           "image2": torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g, dtype=torch.float64),
           "input_ids": ids, "attention_mask": mask}
    for k in ("u1", "u2", "v"):
        out[k] = F.normalize(torch.randn(GLOBAL_BATCH, 8, generator=g, dtype=torch.float64), dim=-1)
    return out


def _model(state: dict[str, torch.Tensor] | None = None) -> AMiFPretrainModel:
    torch.manual_seed(1)
    model = AMiFPretrainModel(_cfg(), LOSSES, stage=0, load_pretrained=state is None)
    if state is not None:
        model.load_state_dict(state)
    return model.double()


def _step(model: AMiFPretrainModel, inp: dict[str, torch.Tensor], stage: int):
    """Losses, gradients and negatives of one step on this process's share of the batch."""
    rank, world = world_info()
    b = GLOBAL_BATCH // world
    rows = slice(rank * b, (rank + 1) * b)
    length = int(inp["attention_mask"][rows].sum(1).max())  # pad only to the local longest caption
    batch = {"image1": inp["image1"][rows], "image2": inp["image2"][rows],
             "input_ids": inp["input_ids"][rows, :length], "attention_mask": inp["attention_mask"][rows, :length]}
    teacher = (inp["u1"][rows], inp["u2"][rows], inp["v"][rows])
    model.set_stage(stage)
    model.eval()  # no dropout: the two runs must see the same function
    model.zero_grad(set_to_none=True)
    losses, aux = model(batch, teacher, teacher_scale=20.0, return_aux=True)
    sum(losses.values()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads, aux


def _worker(rank: int, world: int, store: str, out_dir: str, state_path: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        model = _model(torch.load(state_path))
        results = {}
        for stage in (0, 1):
            losses, grads, aux = _step(model, _inputs(), stage)
            for g in grads.values():
                dist.all_reduce(g)  # what DDP does: average the per-rank gradients
                g /= world
            results[stage] = {"losses": losses, "grads": grads,
                              "aux": {k: v for k, v in aux.items() if k in ("pos_index", "neg_text", "neg_image")}}
        torch.save({"info": world_info(), "results": results}, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # both ranks done with gloo before either tears it down
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_worker()


def test_ddp_step_matches_single_process(tmp_path):
    torch.set_num_threads(1)
    model = _model()
    state_path = tmp_path / "state.pt"
    torch.save({k: v.float() for k, v in model.state_dict().items()}, state_path)
    model = _model(torch.load(state_path))
    ref = {stage: _step(model, _inputs(), stage) for stage in (0, 1)}

    mp.spawn(_worker, args=(WORLD, str(tmp_path / "store"), str(tmp_path), str(state_path)), nprocs=WORLD,
             join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    b = GLOBAL_BATCH // WORLD
    for r, out in enumerate(res):
        assert out["info"] == (r, WORLD)

    for stage in (0, 1):
        ref_losses, ref_grads, ref_aux = ref[stage]
        expected = {"itgc", "imvc", "utgc"} | ({"wpa", "itm"} if stage else set())
        assert set(ref_losses) == expected
        for name, value in ref_losses.items():
            mean = sum(float(out["results"][stage]["losses"][name]) for out in res) / WORLD
            assert mean == pytest.approx(float(value), rel=1e-5, abs=1e-7), f"stage {stage} loss {name}"
        total = sum(float(v) for v in ref_losses.values())
        ddp_total = sum(float(v) for out in res for v in out["results"][stage]["losses"].values()) / WORLD
        assert ddp_total == pytest.approx(total, rel=1e-5)

        # gradients: the same parameters, the same values (encoders only in stage 0)
        for out in res:
            assert set(out["results"][stage]["grads"]) == set(ref_grads)
        assert any(n.startswith("text_encoder.") for n in ref_grads) == (stage == 0)
        assert any(n.startswith("fusion.text_layers.") for n in ref_grads) == (stage == 1)
        assert any(n.startswith("itm_head.") for n in ref_grads) == (stage == 1)
        for name, g in ref_grads.items():
            for r, out in enumerate(res):
                torch.testing.assert_close(out["results"][stage]["grads"][name], g, rtol=1e-4, atol=1e-8,
                                           msg=f"stage {stage} rank {r} grad {name}")

        # positives at global columns rank * B + i
        for r, out in enumerate(res):
            assert out["results"][stage]["aux"]["pos_index"].tolist() == list(range(r * b, (r + 1) * b))
        if stage == 1:
            neg_text = torch.cat([out["results"][1]["aux"]["neg_text"] for out in res])
            neg_image = torch.cat([out["results"][1]["aux"]["neg_image"] for out in res])
            assert torch.equal(neg_text, ref_aux["neg_text"]) and torch.equal(neg_image, ref_aux["neg_image"])
            positions = torch.arange(GLOBAL_BATCH)
            assert not bool((neg_text == positions).any()) and not bool((neg_image == positions).any())
            # negatives come from the other rank too: they index the gathered batch, not the local one
            assert bool((neg_text[:b] >= b).any() or (neg_text[b:] < b).any())
