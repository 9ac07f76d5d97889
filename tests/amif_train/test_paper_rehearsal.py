"""Paper-size rehearsal on the CPU with random weights in the real formats (configs/paper/*).

One stage-0 step, one stage-1 step (OT + ITM), one fine-tuning step and one ranking call at 288 px and
batch 2: every loss finite, the paper's token counts and widths (docs/method.md), ~439 M parameters in the VQA model.
The weight files are written once per module (~0.8 GB under the pytest tmp folder).
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from amif.testing.biomedclip import write_biomedclip
from amif.testing.paper_size import (
    PaperFiles,
    candidate_answers,
    openai_vit_state_dict,
    paper_overrides,
    pretrain_batch,
    vqa_batch,
    write_bert_folder,
)
from amif_train.config import PretrainConfig, load_config

from helpers import CONFIGS

PAPER = CONFIGS / "paper"

B = 2


def write_teacher(folder: Path) -> Path:
    """The soft-label teacher: a small random BiomedCLIP in its released open_clip folder layout."""
    write_biomedclip(folder, width=128, layers=2, text_width=128, text_layers=2, embed_dim=64)
    return folder


@pytest.fixture(scope="module")
def files(module_tmp) -> PaperFiles:
    root = module_tmp("paper")
    torch.save(openai_vit_state_dict(), root / "ViT-B-16.pt")
    return PaperFiles(root / "ViT-B-16.pt", write_bert_folder(root / "bert"), write_teacher(root / "teacher"),
                      tiny=False)


def _finite(losses: dict[str, torch.Tensor]) -> None:
    bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(v)}
    assert not bad, f"non-finite losses {bad}"


def test_pretraining_stages_at_paper_size(files):
    from amif.models.pretrain import AMiFPretrainModel
    from amif.teachers import load_teacher

    cfg = load_config(PAPER / "pretrain_stage0.yaml", paper_overrides(files, pretraining=True), cls=PretrainConfig)
    assert cfg.model.image_encoder.image_size == 288 and cfg.run.global_batch_size == 256
    teacher = load_teacher(cfg.losses.teacher, "cpu")
    torch.manual_seed(0)
    model = AMiFPretrainModel(cfg.model, cfg.losses, stage=0)
    batch = pretrain_batch(model, teacher, B)
    tokens = model.image_encoder(batch["image1"][:1])
    assert tuple(tokens.shape) == (1, 325, 768)  # 18 x 18 patches + CLS at 288 px, width 768
    assert model.text_encoder.width == 768 and len(model.text_encoder.model.encoder.layer) == 12
    # stage 0: the global losses, both encoders trained
    losses = model(batch, teacher.teacher_embeddings(batch), teacher_scale=teacher.logit_scale)
    assert set(losses) == {"itgc", "imvc", "utgc"}
    _finite(losses)
    sum(losses.values()).backward()
    assert model.image_encoder.model.embeddings.patch_embedding.weight.grad is not None
    model.zero_grad(set_to_none=True)
    # stage 1: encoders frozen, + word-patch OT and ITM with hard negatives
    model.set_stage(1)
    losses = model(batch, teacher.teacher_embeddings(batch), teacher_scale=teacher.logit_scale)
    assert {"wpa", "itm"} <= set(losses)
    _finite(losses)
    sum(losses.values()).backward()
    assert model.fusion.image_layers[0].cross_attn.query.weight.grad is not None
    assert model.image_encoder.model.embeddings.patch_embedding.weight.grad is None
    del model, losses
    gc.collect()


def test_finetuning_and_ranking_at_paper_size(files):
    from amif.models.vqa import AMiFVQA

    cfg = load_config(PAPER / "finetune_slake.yaml", paper_overrides(files, pretraining=False))
    assert cfg.run.global_batch_size == 48 and cfg.run.devices == 1
    torch.manual_seed(0)
    model = AMiFVQA(cfg.model, candidate_answers(40), ["yes", "no", "lung", "lesion", "left", "right"])
    n_params = sum(p.numel() for p in model.parameters())
    assert 430e6 < n_params < 445e6, n_params  # ~439 M with Bio_ClinicalBERT's vocabulary
    batch = vqa_batch(model, B)
    context, cmask = model.fuse(batch["pixel_values"], batch["question_ids"], batch["question_mask"])
    assert context.shape[1:] == (batch["question_ids"].shape[1] + 325, 768) and cmask.shape == context.shape[:2]
    loss = model(**batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.gca.gate.weight.grad is not None and model.decoder.layers[6].cross_attn.query.weight.grad is not None
    model.zero_grad(set_to_none=True)
    model.eval()
    ranked = model.rank(batch["pixel_values"], batch["question_ids"], batch["question_mask"])
    assert tuple(ranked.indices.shape) == (B, 32)  # the paper's k = 32
    assert torch.isfinite(ranked.log_likelihood).all()
    assert torch.allclose(ranked.probs.sum(1), torch.ones(B))
