"""No host synchronisation per training step: no ``.item()`` / ``float()`` / ``bool()`` / ``.tolist()`` of
a tensor inside a pre-training step, temperatures logged as tensors on logging steps only, and no
all-reduce of caption lengths when the length is fixed."""

from __future__ import annotations

import contextlib

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

import amif.models.pretrain as pretrain_mod
from amif.losses.config import LossConfig
from amif.models.pretrain import AMiFPretrainModel
from amif_train.config import PretrainRunConfig, load_config
from amif_train.pretrain_module import PretrainModule

from helpers import MICRO, TINY_CONFIG

B = 6
SYNCING = ("item", "tolist", "__float__", "__int__", "__bool__")


@contextlib.contextmanager
def count_host_reads(counts: list[str]):
    """Record every Tensor -> Python conversion (each one waits for the GPU when the tensor is on it)."""
    mp = pytest.MonkeyPatch()
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _name=name, _orig=original, **k):
            counts.append(_name)
            return _orig(self, *a, **k)

        mp.setattr(torch.Tensor, name, wrapper)
    try:
        yield
    finally:
        mp.undo()


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 9, 7, 12, 4, 10])
    ids = torch.randint(1000, 5000, (B, 12), generator=g)
    mask = (torch.arange(12)[None] < lengths[:, None]).long()
    return {"image1": torch.randn(B, 3, 32, 32, generator=g), "image2": torch.randn(B, 3, 32, 32, generator=g),
            "input_ids": ids * mask, "attention_mask": mask}


@pytest.fixture(scope="module")
def model() -> AMiFPretrainModel:
    torch.manual_seed(0)
    return AMiFPretrainModel(load_config(TINY_CONFIG, MICRO).model, LossConfig(), stage=1)


def test_pretraining_step_reads_nothing_back(model):
    g = torch.Generator().manual_seed(1)
    teacher = tuple(F.normalize(torch.randn(B, 8, generator=g), dim=-1) for _ in range(3))
    batch = _batch()
    counts: list[str] = []
    with count_host_reads(counts):
        losses = model(batch, teacher, teacher_scale=torch.tensor(20.0))
        torch.stack(list(losses.values())).sum().backward()
        model.clamp_temperatures()
    assert {"wpa", "itm"} <= set(losses)
    assert counts == [], f"host reads in a training step: {sorted(set(counts))}"


def test_fixed_caption_length_needs_no_all_reduce(monkeypatch):
    monkeypatch.setattr(pretrain_mod, "world_info", lambda: (0, 2))

    def no_all_reduce(*a, **k):
        raise AssertionError("all_reduce called")

    monkeypatch.setattr(pretrain_mod.dist, "all_reduce", no_all_reduce)
    ids, mask = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)
    pid, pmask = pretrain_mod._pad_to_global_length(ids, mask, pad_id=0, fixed=8)
    assert pid.shape == (2, 8) and pmask[:, 5:].sum() == 0 and pid[:, 5:].sum() == 0
    with pytest.raises(ValueError, match="longer than the fixed length"):
        pretrain_mod._pad_to_global_length(ids, mask, pad_id=0, fixed=4)


def test_module_logs_temperatures_on_logging_steps_only(model, tmp_path):
    run = PretrainRunConfig(log_every_n_steps=2, max_steps=4, progress_bar=False, lr=1e-4, warmup_fraction=0.0)
    module = PretrainModule(model, run, teacher=None)
    counts: list[str] = []
    step = module.training_step

    def counted(batch, batch_idx):
        with count_host_reads(counts):
            return step(batch, batch_idx)

    module.training_step = counted
    loader = torch.utils.data.DataLoader([_batch(i) for i in range(4)], batch_size=None)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=CSVLogger(tmp_path, name="logs"),
                        log_every_n_steps=2, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, loader)
    assert counts == [], f"host reads in training_step: {sorted(set(counts))}"
    import csv

    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    logged = [int(r["step"]) for r in rows if r.get("train/tau_itc")]
    assert logged == [1, 3]  # every second step, as log_every_n_steps=2
    assert all(0.01 <= float(r["train/tau_itc"]) <= 0.5 for r in rows if r.get("train/tau_itc"))


def test_text_encoder_mask_gives_the_same_output_without_a_check(model):
    enc = model.text_encoder
    enc.eval()
    batch = _batch()
    counts: list[str] = []
    with count_host_reads(counts):
        ours = enc(batch["input_ids"], batch["attention_mask"])
    reference = enc.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert counts == []
    real = batch["attention_mask"].bool()
    assert torch.allclose(ours[real], reference[real], atol=1e-6)


def test_finetuning_step_reads_nothing_back():
    from amif.models.vqa import AMiFVQA

    torch.manual_seed(0)
    vqa = AMiFVQA(load_config(TINY_CONFIG, MICRO).model, ["yes", "no", "left lung"], ["yes", "no", "left", "lung"])
    q, qm = vqa.tokenize_questions(["is there a lesion?", "which side?"])
    a, am = vqa.tokenize_answers(["yes", "left lung"])
    counts: list[str] = []
    with count_host_reads(counts):
        vqa(torch.randn(2, 3, 32, 32), q, qm, a, am).backward()
    assert counts == [], f"host reads in a fine-tuning step: {sorted(set(counts))}"
