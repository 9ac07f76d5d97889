"""The pre-training model: losses, stages and freezing, hard negatives, loss switches, persistence."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from amif.data.collate import PretrainCollate, caption_key
from amif.errors import CheckpointError, ConfigError
from amif.losses.config import LossConfig
from amif.models.pretrain import LOSS_NAMES, AMiFPretrainModel, wpa_text_mask
from amif.models.vqa import AMiFVQA
from amif_train.config import PretrainConfig, load_config
from amif_train.optim import param_groups

from helpers import CONFIGS, MICRO, TINY_CONFIG

B = 6


@pytest.fixture(scope="module")
def model_cfg():
    return load_config(TINY_CONFIG, MICRO + ["model.fusion.dropout=0.0"]).model


@pytest.fixture(scope="module")
def base_model(model_cfg):
    torch.manual_seed(0)
    return AMiFPretrainModel(model_cfg, LossConfig(hard_negative_mode="sample"), stage=0)


def _batch(seed: int = 0, lengths=(5, 9, 7, 12, 4, 10)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n, length = len(lengths), max(lengths)
    ids = torch.zeros(n, length, dtype=torch.long)
    mask = torch.zeros(n, length, dtype=torch.long)
    for i, n_tok in enumerate(lengths):
        ids[i, 0] = 101
        ids[i, 1:n_tok - 1] = torch.randint(1000, 5000, (n_tok - 2,), generator=g)
        ids[i, n_tok - 1] = 102
        mask[i, :n_tok] = 1
    return {
        "image1": torch.randn(n, 3, 32, 32, generator=g), "image2": torch.randn(n, 3, 32, 32, generator=g),
        "input_ids": ids, "attention_mask": mask,
    }


def _teacher(seed: int = 1, n: int = B):
    g = torch.Generator().manual_seed(seed)
    return tuple(F.normalize(torch.randn(n, 8, generator=g), dim=-1) for _ in range(3))


def _fresh(base: AMiFPretrainModel, stage: int, train_encoders=None, **loss_changes) -> AMiFPretrainModel:
    """A copy of ``base`` with other loss switches and stage (weights shared by value)."""
    m = AMiFPretrainModel(base.cfg, dataclasses.replace(base.losses_cfg, **loss_changes), stage=stage,
                          tokenizer=base.tokenizer, text_config=base.text_encoder.model.config,
                          vision_config=base.image_encoder.model.config, load_pretrained=False,
                          train_encoders=train_encoders)
    m.load_state_dict(base.state_dict())
    return m


def _grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def test_stage0_losses_finite_and_only_global(base_model):
    m = _fresh(base_model, 0)
    m.train()
    losses = m(_batch(), _teacher(), teacher_scale=20.0)
    assert sorted(losses) == ["imvc", "itgc", "utgc"]
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(m.image_encoder)[:4])
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(m.text_encoder))
    # unused in stage 0: frozen, so DDP never waits for their gradients
    assert all(not p.requires_grad and p.grad is None for p in m.fusion.text_layers.parameters())
    assert all(not p.requires_grad for p in m.itm_head.parameters())
    assert m.temperature_itc.log_temperature.grad is not None


def test_stage1_freezes_encoders_and_trains_fusion(base_model):
    m = _fresh(base_model, 1)
    m.train()
    assert not m.image_encoder.training and not m.text_encoder.training and m.fusion.training
    losses = m(_batch(), _teacher(), teacher_scale=20.0)
    assert sorted(losses) == sorted(LOSS_NAMES)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["wpa"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in m.image_encoder.parameters())
    assert all(p.grad is None and not p.requires_grad for p in m.text_encoder.parameters())
    for module in (m.fusion.text_layers, m.fusion.image_layers, m.fusion.text_proj, m.fusion.image_proj, m.itm_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    # temperatures get no weight decay; frozen encoders are not handed to the optimizer
    groups = param_groups(m, 1e-4, 0.02)
    temps = {id(getattr(m, n).log_temperature) for n in ("temperature_itc", "temperature_imv", "temperature_utt")}
    for g in groups:
        for p in g["params"]:
            assert p.requires_grad
            if id(p) in temps:
                assert g["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in m.parameters() if p.requires_grad)


def test_train_encoders_chooses_the_trained_encoders(base_model):
    """run.train_encoders: [image] in stage 0 locks the text encoder (the demo); [image, text] in stage 1
    trains both with every loss (the paper freezes them)."""
    m = _fresh(base_model, 0, train_encoders=["image"])
    m.train()
    assert m.image_encoder.training and not m.text_encoder.training and not m.encoders_frozen
    sum(m(_batch(), _teacher(), teacher_scale=20.0).values()).backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(m.image_encoder)[:4])
    assert all(p.grad is None and not p.requires_grad for p in m.text_encoder.parameters())
    assert any(p.grad is not None for p in m.fusion.text_proj.parameters())  # utgc still trains the projection

    m = _fresh(base_model, 1, train_encoders=["image", "text"])
    m.train()
    assert m.image_encoder.training and m.text_encoder.training
    losses = m(_batch(), _teacher(), teacher_scale=20.0)
    assert sorted(losses) == sorted(LOSS_NAMES)
    losses["itm"].backward()  # the matching loss alone reaches both encoders
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.image_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.text_encoder.parameters())
    assert _fresh(base_model, 1).encoders_frozen  # default: the paper's schedule
    with pytest.raises(ValueError, match="train_encoders"):
        _fresh(base_model, 0, train_encoders=["vision"])
    with pytest.raises(ConfigError, match="train_encoders"):
        load_config(CONFIGS / "demo" / "pretrain_stage0.yaml", ["run.train_encoders=[vision]"], cls=PretrainConfig)


@pytest.mark.parametrize("stage,train_encoders", [(1, None), (0, ["image"])])
def test_frozen_text_cache_gives_the_same_losses(base_model, stage, train_encoders):
    """cache_frozen_text: a caption's tokens are encoded once and reused; the losses and gradients equal
    those of encoding every step, also when a caption comes back in a batch of another padded length."""
    plain = _fresh(base_model, stage, train_encoders=train_encoders)
    cached = _fresh(base_model, stage, train_encoders=train_encoders)
    cached.cache_frozen_text()
    for m in (plain, cached):
        m.train()
    keys = torch.arange(B)
    calls = []
    cached.text_encoder.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    first = _batch(0)
    # the same captions, re-ordered, with the longest one dropped: a shorter padded length
    order = torch.tensor([4, 0, 2, 1, 5])
    second = {k: v[order] for k, v in first.items()}
    second["input_ids"], second["attention_mask"] = second["input_ids"][:, :10], second["attention_mask"][:, :10]
    for batch, k in ((first, keys), (second, keys[order])):
        gen = [torch.Generator().manual_seed(3) for _ in range(2)]
        a = plain(batch, _teacher(n=len(k)), teacher_scale=20.0, generator=gen[0])
        b = cached({**batch, "caption_key": k}, _teacher(n=len(k)), teacher_scale=20.0, generator=gen[1])
        assert sorted(a) == sorted(b)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
        sum(a.values()).backward()
        sum(b.values()).backward()
    for (n1, p1), (_, p2) in zip(plain.named_parameters(), cached.named_parameters()):
        if p1.grad is not None:
            torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-6, msg=n1)
    assert calls == [B]  # encoded once, in the first batch


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_switch_turns_its_loss_off(base_model, name):
    m = _fresh(base_model, 1, **{name: False})
    losses = m(_batch(), _teacher(), teacher_scale=20.0)
    assert name not in losses
    assert sorted(losses) == sorted(n for n in LOSS_NAMES if n != name)
    sum(losses.values()).backward()  # no switched-off module is left trainable without a gradient
    for p_name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, p_name


def test_hard_label_fallback_without_teacher(base_model):
    m = _fresh(base_model, 0)
    m.eval()
    with torch.no_grad():
        soft = m(_batch(), _teacher(), teacher_scale=20.0)
        hard = m(_batch())
    assert all(torch.isfinite(v) for v in hard.values())
    assert abs(float(hard["itgc"]) - float(soft["itgc"])) > 1e-3
    with pytest.raises(ValueError, match="teacher_scale"):
        m(_batch(), _teacher())


def test_hard_negatives_never_positive_and_follow_similarity(base_model):
    m = _fresh(base_model, 1)
    g = torch.Generator().manual_seed(0)
    n = 8
    a = F.normalize(torch.randn(n, 16, generator=g), dim=-1)
    t = F.normalize(a + 0.05 * torch.randn(n, 16, generator=g), dim=-1)  # the positive is the most similar
    pos = torch.arange(n)
    seen = torch.zeros(n, n)
    for _ in range(100):
        neg_t, neg_i, *_ = m._hard_negatives(a, t, pos, g)
        assert not bool((neg_t == pos).any()) and not bool((neg_i == pos).any())
        seen[pos, neg_t] += 1
    assert float(seen.diagonal().sum()) == 0.0
    # sampling follows softmax(sim / tau): the most similar negative is drawn more often than the least
    sim = (a @ t.T).fill_diagonal_(-2)
    hardest, easiest = sim.argmax(1), sim.masked_fill(torch.eye(n, dtype=torch.bool), 2).argmin(1)
    assert float(seen[pos, hardest].sum()) > float(seen[pos, easiest].sum())
    # most_similar mode is the arg-max over the non-positive columns
    m.losses_cfg = dataclasses.replace(m.losses_cfg, hard_negative_mode="most_similar")
    neg_t, neg_i, *_ = m._hard_negatives(a, t, pos, None)
    assert torch.equal(neg_t, hardest)
    # inside forward, too
    _, aux = m(_batch(), _teacher(), teacher_scale=20.0, return_aux=True)
    assert not bool((aux["neg_text"] == aux["pos_index"]).any())
    assert not bool((aux["neg_image"] == aux["pos_index"]).any())
    assert aux["itm_labels"].tolist() == [1] * B + [0] * (2 * B)


def test_negative_text_keeps_its_own_mask(base_model):
    """The ITM logit of (image i, negative text j) equals fusing that pair with text j's own mask."""
    m = _fresh(base_model, 1, hard_negative_mode="most_similar")
    m.eval()
    batch = _batch(lengths=(4, 12, 5, 11, 6, 3))
    with torch.no_grad():
        _, aux = m(batch, _teacher(), teacher_scale=20.0, return_aux=True)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        j = aux["neg_text"]
        text = m.fusion.text_proj(m.text_encoder(ids[j], mask[j]))
        image = m.fusion.image_proj(m.image_encoder(batch["image1"]))
        x, y = m.fusion.fuse(text, mask[j], image, None)
        expected = m.itm_head(torch.cat([x[:, 0], y[:, 0]], -1))
        wrong_x, wrong_y = m.fusion.fuse(text, mask, image, None)  # the anchor's mask (published bug)
        wrong = m.itm_head(torch.cat([wrong_x[:, 0], wrong_y[:, 0]], -1))
    assert not bool((mask[j].sum(1) == mask.sum(1)).all())
    torch.testing.assert_close(aux["itm_logits"][B:2 * B], expected, rtol=1e-4, atol=1e-5)
    assert (aux["itm_logits"][B:2 * B] - wrong).abs().max() > 1e-4


def test_wpa_mask_drops_cls_sep_and_padding():
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    assert wpa_text_mask(mask).long().tolist() == [
        [0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0],
    ]


def test_collate_tokenises_and_keys_captions(base_model):
    items = [
        {"image1": torch.zeros(3, 4, 4), "image2": torch.ones(3, 4, 4), "caption": c, "id": f"r{i}", "id2": f"r{i}",
         "index": i}
        for i, c in enumerate(["a lesion in the left lung", "normal chest", "a lesion in the left lung"])
    ]
    batch = PretrainCollate(base_model.tokenizer, max_length=5)(items)
    assert batch["image1"].shape == (3, 3, 4, 4) and batch["input_ids"].shape[1] <= 5
    assert batch["input_ids"][0, 0] == base_model.tokenizer.cls_token_id
    keys = batch["caption_key"].tolist()
    assert keys[0] == keys[2] != keys[1] and keys[0] == caption_key("a lesion in the left lung")
    assert batch["id"] == ["r0", "r1", "r2"] and batch["index"].tolist() == [0, 1, 2]


def test_save_load_round_trip_and_vqa_init(base_model, model_cfg, tmp_path):
    m = _fresh(base_model, 1)
    with torch.no_grad():
        m.temperature_itc.log_temperature.fill_(-2.0)
        m.itm_head.bias.fill_(0.25)
    folder = m.save(tmp_path / "pt")
    assert (folder / "pretrain_config.yaml").is_file()
    keys = load_file(str(folder / "model.safetensors")).keys()
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"image_encoder", "text_encoder", "fusion", "itm_head", "temperature_itc",
                        "temperature_imv", "temperature_utt"}
    loaded = AMiFPretrainModel.load(folder)
    assert loaded.stage == 1 and loaded.losses_cfg == m.losses_cfg
    for k, v in m.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, msg=k)
    m.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(_batch(), generator=torch.Generator().manual_seed(0)),
                                   m(_batch(), generator=torch.Generator().manual_seed(0)))
    # the next stage may change losses and stage
    stage0 = AMiFPretrainModel.load(folder, losses=LossConfig(wpa=False), stage=0)
    assert stage0.stage == 0 and not stage0.uses("wpa")

    vqa = AMiFVQA(model_cfg, ["yes", "no"], ["yes", "no"], load_pretrained=False)
    names = vqa.load_encoder_weights(folder)
    assert names and all(n.startswith(("image_encoder.", "text_encoder.", "fusion.")) for n in names)
    vqa_state = vqa.state_dict()
    for k, v in m.state_dict().items():
        if k.startswith(("image_encoder.", "text_encoder.", "fusion.")):
            torch.testing.assert_close(vqa_state[k], v, msg=k)


def test_load_errors(base_model, tmp_path):
    with pytest.raises(CheckpointError, match="not a pre-training model folder"):
        AMiFPretrainModel.load(tmp_path / "missing")
    folder = base_model.save(tmp_path / "pt")
    wider = load_config(TINY_CONFIG, MICRO + ["model.fusion.hidden_size=64"]).model
    with pytest.raises(CheckpointError, match=r"tensor\(s\) with the wrong shape:\n  fusion\.image_layers\.0\.cross_attn\.key\.bias: expected \(64,\), got \(48,\)"):
        AMiFPretrainModel.load(folder, wider)


def test_temperatures_are_clamped(base_model):
    m = _fresh(base_model, 0)
    with torch.no_grad():
        m.temperature_itc.log_temperature.fill_(5.0)
        m.temperature_imv.log_temperature.fill_(-9.0)
    m.clamp_temperatures()
    temps = m.temperatures()
    assert temps["temperature_itc"] == pytest.approx(0.5) and temps["temperature_imv"] == pytest.approx(0.01)


def test_configs_load_and_demo_model_matches_tiny():
    tiny = load_config(TINY_CONFIG).model
    s0 = load_config(CONFIGS / "demo" / "pretrain_stage0.yaml", cls=PretrainConfig)
    s1 = load_config(CONFIGS / "demo" / "pretrain_stage1.yaml", cls=PretrainConfig)
    assert s0.model == tiny and s1.model == tiny  # fine-tuning from the demo pre-training must fit
    assert s0.run.stage == 0 and s1.run.stage == 1 and s1.run.init_from
    assert s0.data.augment.hflip_p == 0.0  # demo captions mention left/right
    p0 = load_config(CONFIGS / "paper" / "pretrain_stage0.yaml", cls=PretrainConfig)
    p1 = load_config(CONFIGS / "paper" / "pretrain_stage1.yaml", cls=PretrainConfig)
    assert p1.run.lr == pytest.approx(4e-6) and p1.run.stage == 1 and p0.run.stage == 0
    assert p1.run.weight_decay == pytest.approx(0.02) and tuple(p1.run.betas) == (0.9, 0.98)
    assert p1.model.image_encoder.image_size == 288 and p1.model.fusion.num_layers == 6
    assert {c.kind for c in p0.data.corpora} == {"mimic_cxr", "medicat", "roco"}
    paper_finetune = CONFIGS / "paper" / "finetune_base.yaml"
    if paper_finetune.is_file():  # fine-tuning from the paper pre-training must fit too
        assert load_config(paper_finetune).model == p0.model


def test_config_errors():
    with pytest.raises(ConfigError, match="target_mode"):
        load_config(None, ["losses.target_mode=soft"], cls=PretrainConfig)
    with pytest.raises(ConfigError, match="kind"):
        load_config(None, ["data.corpora=[{kind: flickr}]"], cls=PretrainConfig)
    with pytest.raises(ConfigError, match="stage 0"):
        load_config(None, ["losses.itgc=false", "losses.imvc=false", "losses.utgc=false"], cls=PretrainConfig)
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["losses.lambda=0.1"], cls=PretrainConfig)


def test_image_pooling_modes(base_model):
    """losses.image_pooling: CLS, mean of all tokens, per-channel max over the patch tokens (whose
    gradient reaches only the patch where each channel peaks)."""
    tokens = torch.randn(2, 5, 4, requires_grad=True)
    pooled = {}
    for mode in ("cls", "mean", "max"):
        pooled[mode] = _fresh(base_model, 0, image_pooling=mode).pool_image(tokens)
    assert torch.equal(pooled["cls"], tokens[:, 0])
    assert torch.allclose(pooled["mean"], tokens.mean(1))
    assert torch.equal(pooled["max"], tokens[:, 1:].max(dim=1).values)
    pooled["max"].sum().backward()
    assert tokens.grad[:, 0].abs().sum() == 0  # CLS is not pooled
    assert torch.equal(tokens.grad[:, 1:].sum(1), torch.ones(2, 4))  # one patch per channel
    with pytest.raises(ConfigError, match="image_pooling"):
        load_config(None, ["losses.image_pooling=attention"], cls=PretrainConfig)


def test_hard_negatives_skip_duplicate_captions_and_same_study(base_model):
    """64 rows, row 1 repeats row 0's caption, rows 2-3 are views of one study: in 2,000 draws no
    image gets its duplicate / same-study caption, and no caption such an image (before the fix the
    duplicate was drawn in ~all draws: it is the most similar column)."""
    m = _fresh(base_model, 1)
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(64, 16, generator=g), dim=-1)
    feats[1] = feats[0]
    feats[3] = F.normalize(feats[2] + 0.01, dim=-1)
    keys = torch.arange(64)
    keys[1] = keys[0]
    study = torch.arange(64) + 100
    study[3] = study[2]
    batch = {"caption_key": keys, "study_key": study}
    pos = torch.arange(64)
    hits = {0: 0, 1: 0, 2: 0, 3: 0}
    for _ in range(2000):
        nt, ni, ok_t, ok_i = m._hard_negatives(feats, feats, pos, g, batch)
        assert bool(ok_t.all() and ok_i.all())
        for row, bad in ((0, 1), (1, 0), (2, 3), (3, 2)):
            hits[row] += int(nt[row] == bad) + int(ni[row] == bad)
    assert hits == {0: 0, 1: 0, 2: 0, 3: 0}
    # without the keys the duplicate is drawn almost always: the test above can fail
    drawn = sum(int(m._hard_negatives(feats, feats, pos, g, {})[0][0] == 1) for _ in range(200))
    assert drawn > 150


def test_rows_without_an_admissible_negative_are_left_out_and_counted(base_model):
    m = _fresh(base_model, 1)
    m.eval()
    batch = _batch(3)
    batch["caption_key"] = torch.arange(B)
    batch["study_key"] = torch.tensor([7, 7, 7, 7, 8, 9])  # rows 0-3: one study, rows 4-5 only have each other
    batch["study_key"][5] = 8  # now all rows share a study with another, and rows 4-5 form a pair
    with torch.no_grad():
        losses, aux = m(batch, return_aux=True, generator=torch.Generator().manual_seed(0))
    assert int(aux["itm_skipped"]) == 0
    batch["study_key"] = torch.full((B,), 5)  # one study: nothing is admissible
    with torch.no_grad():
        losses, aux = m(batch, return_aux=True, generator=torch.Generator().manual_seed(0))
    assert int(aux["itm_skipped"]) == 2 * B
    assert aux["itm_keep"].tolist() == [True] * B + [False] * (2 * B)
    positives = F.cross_entropy(aux["itm_logits"][:B].float(), aux["itm_labels"][:B])
    torch.testing.assert_close(losses["itm"], positives)


def _with_counterfactuals(batch: dict, valid: list[bool], seed: int = 5) -> dict:
    """``batch`` plus counterfactual captions (random tokens) for the rows where ``valid`` is True."""
    cf = _batch(seed, lengths=(6, 8, 5, 9, 7, 4))
    return {**batch, "negative_ids": cf["input_ids"], "negative_mask": cf["attention_mask"],
            "negative_valid": torch.tensor(valid)}


def test_itm_counterfactual_pairs_are_negatives_and_absent_ones_dropped(base_model):
    m = _fresh(base_model, 1, itm_counterfactuals=True)
    m.eval()
    valid = [True, False, True, True, False, True]
    batch = _with_counterfactuals(_batch(), valid)
    with torch.no_grad():
        losses, aux = m(batch, return_aux=True, generator=torch.Generator().manual_seed(0))
        text = m.fusion.text_proj(m.text_encoder(batch["negative_ids"], batch["negative_mask"]))
        image = m.fusion.image_proj(m.image_encoder(batch["image1"]))
        x, y = m.fusion.fuse(text, batch["negative_mask"], image, None)
        expected = m.itm_head(torch.cat([x[:, 0], y[:, 0]], -1))
    assert aux["itm_labels"].tolist() == [1] * B + [0] * (3 * B)
    assert aux["itm_keep"][3 * B:].tolist() == valid
    torch.testing.assert_close(aux["itm_logits"][3 * B:], expected, rtol=1e-4, atol=1e-5)
    keep = aux["itm_keep"]
    full = F.cross_entropy(aux["itm_logits"][keep].float(), aux["itm_labels"][keep])
    torch.testing.assert_close(losses["itm"], full)
    assert int(aux["itm_skipped"]) == int((~aux["itm_keep"][:3 * B]).sum())  # hard negatives only


def test_itm_counterfactuals_off_leaves_the_losses_unchanged(base_model):
    plain = _fresh(base_model, 1)
    plain.eval()
    batch = _batch()
    with torch.no_grad():
        ref = plain(batch, _teacher(), teacher_scale=20.0, generator=torch.Generator().manual_seed(0))
        off = plain(_with_counterfactuals(batch, [True] * B), _teacher(), teacher_scale=20.0,
                    generator=torch.Generator().manual_seed(0))
        on = _fresh(base_model, 1, itm_counterfactuals=True)(
            _with_counterfactuals(batch, [True] * B), _teacher(), teacher_scale=20.0,
            generator=torch.Generator().manual_seed(0))
    assert sorted(off) == sorted(ref) and all(torch.equal(off[k], ref[k]) for k in ref)
    assert all(torch.equal(on[k], ref[k]) for k in ref if k != "itm") and not torch.equal(on["itm"], ref["itm"])


def test_itc_counterfactuals_contrast_each_image_with_its_caption_and_twin(base_model):
    m = _fresh(base_model, 0, itc_counterfactuals=True, counterfactual_weight=2.0)
    m.eval()
    valid = [True, False, True, True, False, True]
    batch = _with_counterfactuals(_batch(), valid)
    with torch.no_grad():
        losses = m(batch, _teacher(), teacher_scale=20.0)
        ref = _fresh(base_model, 0).eval()(batch, _teacher(), teacher_scale=20.0)
        a = m.image_features(batch["image1"])
        own = m.text_features(batch["input_ids"], batch["attention_mask"])
        twin = m.text_features(batch["negative_ids"], batch["negative_mask"])
        tau = m.temperature_itc()
    logits = torch.stack([(a * own).sum(-1), (a * twin).sum(-1)], -1) / tau
    rows = torch.tensor(valid)
    expected = F.cross_entropy(logits[rows], torch.zeros(int(rows.sum()), dtype=torch.long))
    torch.testing.assert_close(losses["itc_cf"], 2.0 * expected, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(losses[k], ref[k]) for k in ref)  # the other losses are untouched
    assert "itc_cf" not in ref
    # a twin no different from the caption is a coin toss: log 2 per row
    same = {**batch, "negative_ids": batch["input_ids"], "negative_mask": batch["attention_mask"]}
    with torch.no_grad():
        coin = m(same, _teacher(), teacher_scale=20.0)["itc_cf"]
    torch.testing.assert_close(coin, torch.tensor(2.0 * 0.6931472), rtol=1e-4, atol=1e-5)


def test_itc_counterfactuals_train_the_image_side_in_stage0(base_model):
    m = _fresh(base_model, 0, itgc=True, imvc=False, utgc=False, itc_counterfactuals=True)
    batch = _with_counterfactuals(_batch(), [True] * B)
    loss = m(batch, _teacher(), teacher_scale=20.0)["itc_cf"]
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.image_encoder.parameters())
    assert m.fusion.text_proj.weight.grad is not None and m.fusion.text_proj.weight.grad.abs().sum() > 0
