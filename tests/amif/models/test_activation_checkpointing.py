"""``run.activation_checkpointing``: the same losses and gradients with far fewer saved activations."""

import copy

import pytest
import torch
import torch.nn.functional as F

from amif.losses.config import LossConfig
from amif.models.coattention import enable_activation_checkpointing
from amif.models.pretrain import AMiFPretrainModel
from amif_train.config import load_config

from helpers import MICRO, TINY_CONFIG

B = 4


def _batch():
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(10)[None] < torch.tensor([4, 10, 7, 6])[:, None]).long()
    return {"image1": torch.randn(B, 3, 32, 32, generator=g), "image2": torch.randn(B, 3, 32, 32, generator=g),
            "input_ids": torch.randint(1000, 5000, (B, 10), generator=g) * mask, "attention_mask": mask}


def _saved_bytes(fn) -> int:
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("stage", [0, 1])
def test_same_losses_and_gradients_less_saved(stage):
    torch.manual_seed(0)
    cfg = load_config(TINY_CONFIG, MICRO + ["model.text_encoder.num_layers=2", "model.fusion.num_layers=2"]).model
    plain = AMiFPretrainModel(cfg, LossConfig(), stage=stage).train()
    ckpt = copy.deepcopy(plain)
    enable_activation_checkpointing(ckpt)
    g = torch.Generator().manual_seed(1)
    teacher = tuple(F.normalize(torch.randn(B, 8, generator=g), dim=-1) for _ in range(3))
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(5)  # the same dropout draws and hard negatives for both
        losses = model(_batch(), teacher, teacher_scale=20.0)
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
        torch.manual_seed(5)
        results[-1] += (_saved_bytes(lambda m=model: m(_batch(), teacher, teacher_scale=20.0)),)
    (la, ga, sa), (lb, gb, sb) = results
    assert la.keys() == lb.keys() and all(torch.allclose(la[k], lb[k], atol=1e-6) for k in la)
    assert ga.keys() == gb.keys() and len(ga) > 0
    assert all(torch.allclose(ga[n], gb[n], atol=1e-5) for n in ga)
    assert sb < 0.6 * sa, (sa, sb)
