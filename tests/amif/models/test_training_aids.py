"""Options that make the small from-scratch model trainable: conv stem, attention inits, frozen
word embeddings (docs/demo.md explains why each exists)."""

import dataclasses

import pytest
import torch

from amif.data.collate import collate_vqa
from amif.data.records import load_split
from amif.data.transforms import build_eval_transform
from amif.data.vqa_dataset import VQADataset
from amif.errors import ConfigError
from amif.models.answer_decoder import AnswerDecoder
from amif.models.attention import MultiHeadAttention
from amif.models.coattention import CoAttentionFusion
from amif.models.config import ImageEncoderConfig
from amif.models.gated_cross_attention import GatedCrossAttention
from amif.models.image_encoder import ConvStem, ImageEncoder, sincos_position_embedding
from amif.models.vqa import AMiFVQA
from amif_train.config import load_config
from amif_train.optim import param_groups

from helpers import CONFIGS, MICRO, TINY_CONFIG, make_shapes_dataset

CANDIDATES = ["yes", "no", "left", "right", "2"]


def build(extra=()):
    torch.manual_seed(0)
    cfg = load_config(TINY_CONFIG, MICRO + list(extra)).model
    return AMiFVQA(cfg, CANDIDATES, ["yes", "no", "left", "right"])


def _inputs(model):
    q, qm = model.tokenize_questions(["is there a lesion?", "which side is the lesion on?"])
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32), q, qm


@pytest.mark.parametrize("patch", [4, 8, 16])
def test_conv_stem_gives_the_patch_grid(patch):
    cfg = ImageEncoderConfig(pretrained=None, image_size=64, patch_size=patch, hidden_size=48, num_layers=1,
                             num_heads=2, intermediate_size=96, stem="conv")
    enc = ImageEncoder(cfg)
    assert isinstance(enc.model.embeddings.patch_embedding, ConvStem)
    out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1 + (64 // patch) ** 2, 48)
    # a lesion-sized bright spot changes the output of the tokens that cover it, not of far-away tokens
    # at the stem (locality), unlike a global-pooling stem
    enc.eval()
    stem = enc.model.embeddings.patch_embedding
    x = torch.zeros(1, 3, 64, 64)
    y = x.clone()
    y[:, :, 2:5, 2:5] = 3.0
    diff = (stem(y) - stem(x)).abs().sum(1)[0]
    assert diff[0, 0] > 0 and diff[-1, -1] == 0


def test_conv_stem_rejects_bad_settings():
    with pytest.raises(ValueError, match="power-of-two"):
        ConvStem(48, 12)
    with pytest.raises(ConfigError, match="stem"):
        load_config(TINY_CONFIG, ["model.image_encoder.stem=convolution"])
    with pytest.raises(ConfigError, match="no pretrained weights"):
        load_config(TINY_CONFIG, ["model.image_encoder.stem=conv", "model.image_encoder.pretrained=/some/clip"])
    with pytest.raises(ConfigError, match="power-of-two"):
        load_config(TINY_CONFIG, ["model.image_encoder.stem=conv", "model.image_encoder.patch_size=12"])
    # pre-training configs share the model checks
    from amif_train.config import PretrainConfig

    stage0 = TINY_CONFIG.parent / "demo" / "pretrain_stage0.yaml"
    with pytest.raises(ConfigError, match="stem"):
        load_config(stage0, ["model.image_encoder.stem=convolution"], cls=PretrainConfig)


def test_conv_stem_model_saves_and_loads(tmp_path):
    model = build(["model.image_encoder.stem=conv", "model.fusion.dropout=0", "model.gca.dropout=0",
                   "model.decoder.dropout=0"]).eval()
    assert any(".patch_embedding.blocks." in k for k in model.state_dict())
    px, q, qm = _inputs(model)
    model.save_pretrained(tmp_path / "m")
    loaded = AMiFVQA.from_pretrained(tmp_path / "m").eval()
    r1, r2 = model.rank(px, q, qm), loaded.rank(px, q, qm)
    assert torch.equal(r1.indices, r2.indices) and torch.allclose(r1.log_likelihood, r2.log_likelihood)


def test_sincos_position_init_makes_position_readable(tmp_path):
    table = sincos_position_embedding(4, 48)
    assert table.shape == (17, 48) and table[0].abs().sum() == 0
    # every patch position is distinct, and the row / column halves depend only on the row / column
    assert torch.cdist(table[1:], table[1:]).add(torch.eye(16) * 9).min() > 0.5
    grid = table[1:].view(4, 4, 48)
    assert torch.allclose(grid[:, 0, :24], grid[:, 3, :24]) and torch.allclose(grid[0, :, 24:], grid[3, :, 24:])
    kw = dict(pretrained=None, image_size=32, patch_size=8, hidden_size=48, num_layers=1, num_heads=2,
              intermediate_size=96, stem="conv")
    enc = ImageEncoder(ImageEncoderConfig(**kw, position_init="sincos"))
    pos = enc.model.embeddings.position_embedding.weight
    assert torch.equal(pos.detach(), table) and pos.requires_grad  # learned from there on
    assert ImageEncoder(ImageEncoderConfig(**kw)).model.embeddings.position_embedding.weight.std() < 0.05
    # a saved model keeps its (trained) table instead of re-initialising it
    model = build(["model.image_encoder.stem=conv", "model.image_encoder.position_init=sincos"])
    with torch.no_grad():
        model.image_encoder.model.embeddings.position_embedding.weight.add_(1.0)
    model.save_pretrained(tmp_path / "m")
    loaded = AMiFVQA.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.image_encoder.model.embeddings.position_embedding.weight,
                       model.image_encoder.model.embeddings.position_embedding.weight)
    with pytest.raises(ConfigError, match="position_init"):
        load_config(TINY_CONFIG, ["model.image_encoder.position_init=fixed"])
    with pytest.raises(ConfigError, match="random initialisation"):
        load_config(TINY_CONFIG, ["model.image_encoder.position_init=sincos", "model.image_encoder.pretrained=/x"])


def _cross_std(dec: AnswerDecoder) -> float:
    return torch.cat([dec.layers[0].cross_attn.value.weight.flatten(), dec.layers[0].cross_attn.out.weight.flatten()]).std().item()


def test_cross_attention_init_options():
    torch.manual_seed(0)
    kw = {"vocab_size": 50, "hidden_size": 64, "num_heads": 4, "intermediate_size": 128, "num_layers": 1,
          "cross_attention_from": 0, "context_size": 32}
    bert = AnswerDecoder(**kw, cross_attention_init="bert")
    xavier = AnswerDecoder(**kw)
    assert _cross_std(bert) == pytest.approx(0.02, rel=0.1)
    # Glorot: std sqrt(2 / (fan_in + fan_out)) = sqrt(2 / 96) ~ 0.144 for the value projection
    assert _cross_std(xavier) > 5 * _cross_std(bert)
    # the self-attention (copied from BERT in the real model) keeps BERT's initialisation
    assert xavier.layers[0].self_attn.value.weight.std().item() == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ValueError, match="cross_attention_init"):
        AnswerDecoder(**kw, cross_attention_init="zeros")
    with pytest.raises(ConfigError, match="cross_attention_init"):
        load_config(TINY_CONFIG, ["model.decoder.cross_attention_init=normal"])


def _attn_std(module: torch.nn.Module) -> float:
    ws = [m.value.weight.flatten() for m in module.modules() if isinstance(m, MultiHeadAttention)]
    return torch.cat(ws).std().item()


def _glorot_std(module: torch.nn.Module) -> float:
    w = next(m.value.weight for m in module.modules() if isinstance(m, MultiHeadAttention))
    return (2 / sum(w.shape)) ** 0.5


def test_fusion_and_gca_attention_init_options():
    torch.manual_seed(0)
    bert = build([])
    xavier = build(["model.fusion.attention_init=xavier", "model.gca.attention_init=xavier"])
    for name in ("fusion", "gca"):
        assert _attn_std(getattr(bert, name)) == pytest.approx(0.02, rel=0.1)
        # Glorot-uniform: std sqrt(2 / (fan_in + fan_out))
        assert _attn_std(getattr(xavier, name)) == pytest.approx(_glorot_std(getattr(xavier, name)), rel=0.1)
    # the feed-forward layers keep N(0, 0.02)
    assert xavier.fusion.text_layers[0].ffn.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)
    # the pre-training model builds its fusion from the same section
    cfg = load_config(TINY_CONFIG, ["model.fusion.attention_init=xavier"]).model
    fusion = CoAttentionFusion(cfg.fusion, 384, 192)
    assert _attn_std(fusion) == pytest.approx(_glorot_std(fusion), rel=0.1)
    for key in ("model.fusion.attention_init", "model.gca.attention_init"):
        with pytest.raises(ConfigError, match=key):
            load_config(TINY_CONFIG, [f"{key}=normal"])
    with pytest.raises(ValueError, match="attention_init"):
        GatedCrossAttention(64, 4, 128, attention_init="normal")


def test_frozen_word_embeddings_stay_fixed_and_leave_the_optimiser():
    model = build(["model.text_encoder.freeze_word_embeddings=true"])
    enc_w = model.text_encoder.word_embeddings.weight
    dec_w = model.decoder.word_embeddings.weight
    assert not enc_w.requires_grad and not dec_w.requires_grad
    in_groups = {id(p) for g in param_groups(model, 1e-3, 0.01) for p in g["params"]}
    assert id(enc_w) not in in_groups and id(dec_w) not in in_groups
    before = (enc_w.clone(), dec_w.clone(), model.decoder.head_bias.clone())
    opt = torch.optim.AdamW(param_groups(model, 1e-2, 0.01), lr=1e-2)
    px, q, qm = _inputs(model)
    a, am = model.tokenize_answers(["yes", "left"])
    model(px, q, qm, a, am).backward()
    opt.step()
    assert torch.equal(enc_w, before[0]) and torch.equal(dec_w, before[1])
    assert not torch.equal(model.decoder.head_bias, before[2])  # the rest of the head still trains


def test_frozen_image_encoder_keeps_weights_and_batchnorm_statistics():
    """run.freeze_image_encoder: no gradient, not in the optimiser, eval mode (BatchNorm running
    statistics fixed) however often Lightning calls train(); the rest of the model trains."""
    from amif_train.vqa_module import VQAModule

    cfg = load_config(TINY_CONFIG, MICRO + ["model.image_encoder.stem=conv", "run.freeze_image_encoder=true"])
    torch.manual_seed(0)
    model = AMiFVQA(cfg.model, CANDIDATES, ["yes", "no", "left", "right"])
    module = VQAModule(model, cfg.run)
    module.train()
    assert not model.image_encoder.training and model.fusion.training
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    assert any("running_mean" in k for k in before)
    groups = param_groups(model, 1e-2, 0.01)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in in_groups for p in model.image_encoder.parameters())
    opt = torch.optim.AdamW(groups, lr=1e-2)
    fusion_before = [p.clone() for p in model.fusion.parameters()]
    px, q, qm = _inputs(model)
    a, am = model.tokenize_answers(["yes", "left"])
    model(px, q, qm, a, am).backward()
    opt.step()
    after = model.image_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(b, p) for b, p in zip(fusion_before, model.fusion.parameters()))
    with pytest.raises(ConfigError, match="freeze_image_encoder"):
        from amif_train.config import PretrainConfig
        load_config(CONFIGS / "demo" / "pretrain_stage0.yaml", ["run.freeze_image_encoder=true"], cls=PretrainConfig)


def test_frozen_text_encoder_and_feature_cache_give_the_same_training():
    """run.freeze_text_encoder + run.cache_frozen_features: the question encoder gets no gradient and
    stays in eval mode; the cache encodes each distinct image / question once and gives the loss,
    gradients and ranking of the uncached model."""
    from amif_train.vqa_module import VQAModule

    extra = ["model.image_encoder.stem=conv", "run.freeze_image_encoder=true", "run.freeze_text_encoder=true",
             "run.cache_frozen_features=true", "model.fusion.dropout=0", "model.gca.dropout=0", "model.decoder.dropout=0"]
    cfg = load_config(TINY_CONFIG, MICRO + extra)
    torch.manual_seed(0)
    plain = AMiFVQA(cfg.model, CANDIDATES, ["yes", "no", "left", "right"])
    cached = AMiFVQA(cfg.model, CANDIDATES, ["yes", "no", "left", "right"])
    cached.load_state_dict(plain.state_dict())
    VQAModule(plain, dataclasses.replace(cfg.run, cache_frozen_features=False)).train()
    VQAModule(cached, cfg.run).train()
    assert not cached.text_encoder.training and cached.fusion.training
    assert not any(p.requires_grad for p in cached.text_encoder.parameters())
    calls = {"image": 0, "text": 0}
    cached.image_encoder.register_forward_hook(lambda *a: calls.__setitem__("image", calls["image"] + 1))
    cached.text_encoder.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1))
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    questions = ["is there a lesion?", "which side is the lesion on, left or right?", "is there a lesion?"]
    answers = ["yes", "left", "no"]
    for order in ([0, 1, 2], [2, 0, 1], [1, 1, 0]):  # batches of repeated and re-padded items
        px = images[order]
        q, qm = plain.tokenize_questions([questions[i] for i in order])
        a, am = plain.tokenize_answers([answers[i] for i in order])
        plain.zero_grad()
        cached.zero_grad()
        loss_p, loss_c = plain(px, q, qm, a, am), cached(px, q, qm, a, am)
        loss_p.backward()
        loss_c.backward()
        assert torch.allclose(loss_p, loss_c, atol=1e-5)
        for (name, gp), gc in zip(plain.named_parameters(), cached.parameters()):
            if gp.grad is not None:
                assert torch.allclose(gp.grad, gc.grad, atol=1e-5), name
        r_p, r_c = plain.rank(px, q, qm), cached.rank(px, q, qm)
        assert torch.equal(r_p.indices, r_c.indices)
    # 3 distinct images and 2 distinct questions: one encoder call per batch that had new ones
    assert len(cached._feature_cache["image_encoder"]) == 3 and len(cached._feature_cache["text_encoder"]) == 2
    assert calls == {"image": 1, "text": 1}
    with pytest.raises(ConfigError, match="needs a frozen encoder"):
        load_config(TINY_CONFIG, MICRO + ["run.cache_frozen_features=true"])
    with pytest.raises(ConfigError, match="augment"):
        load_config(TINY_CONFIG, MICRO + ["run.cache_frozen_features=true", "run.freeze_image_encoder=true",
                                          "data.augment.enabled=true"])
    from amif_train.config import PretrainConfig
    with pytest.raises(ConfigError, match="freeze_text_encoder"):
        load_config(CONFIGS / "demo" / "pretrain_stage0.yaml", ["run.freeze_text_encoder=true"], cls=PretrainConfig)


def test_answer_restricted_output_vocabulary():
    model = build(["model.decoder.output_vocabulary=answers"]).eval()
    dec = model.decoder
    words = set(model.tokenizer.convert_ids_to_tokens(dec.output_ids.tolist()))
    assert {"yes", "no", "left", "right", "2", "[SEP]"} <= words and len(words) <= 8
    px, q, qm = _inputs(model)
    context, cmask = model.fuse(px, q, qm)
    start = model.candidate_ids[:2, :1]
    logits = dec(start, torch.ones_like(start, dtype=torch.bool), context, cmask)
    assert logits.shape[-1] == len(dec.output_ids)
    # ranking with k = all equals scoring every candidate by its (restricted) sequence likelihood
    r = model.rank(px, q, qm, k=len(CANDIDATES))
    scores = []
    for c in CANDIDATES:
        ids, mask = model.tokenize_answers([c, c])
        scores.append(dec.sequence_log_likelihood(ids, mask, context, cmask))
    brute = torch.stack(scores, 1)
    assert torch.equal(r.indices[:, 0], brute.argmax(1))
    assert torch.allclose(r.log_likelihood, brute.sort(1, descending=True).values, atol=1e-5)
    # probabilities of all candidates' first tokens come from one softmax over the restricted set
    assert torch.allclose(logits.log_softmax(-1).exp().sum(-1), torch.ones(2, 1))
    bad, _ = model.tokenize_answers(["pneumothorax"])
    with pytest.raises(ValueError, match="outside the decoder's restricted output vocabulary"):
        dec.output_positions(bad[:, 1:])
    # the model trains and reloads with the same restriction
    a, am = model.tokenize_answers(["yes", "left"])
    model.train()
    assert torch.isfinite(model(px, q, qm, a, am))
    with pytest.raises(ConfigError, match="output_vocabulary"):
        load_config(TINY_CONFIG, ["model.decoder.output_vocabulary=some"])


def test_restricted_model_saves_and_loads(tmp_path):
    model = build(["model.decoder.output_vocabulary=answers"]).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = AMiFVQA.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(loaded.decoder.output_ids, model.decoder.output_ids)
    px, q, qm = _inputs(model)
    assert torch.equal(model.rank(px, q, qm).indices, loaded.rank(px, q, qm).indices)


def test_training_targets_are_the_normalised_answers():
    """The loss trains the form that ranking scores: a raw "X-Ray" answer is the candidate "xray"."""
    from amif_train.config import FinetuneRunConfig
    from amif_train.vqa_module import VQAModule

    torch.manual_seed(0)
    cfg = load_config(TINY_CONFIG, MICRO + ["model.decoder.output_vocabulary=answers"]).model
    model = AMiFVQA(cfg, ["xray", "ct", "yes", "no"], ["xray", "ct", "yes", "no"])
    module = VQAModule(model, FinetuneRunConfig())
    items = [{"pixel_values": torch.zeros(3, 32, 32), "image": None, "question": q, "answer": a, "qid": str(i),
              "answer_type": "OPEN", "question_type": ""}
             for i, (q, a) in enumerate([("what modality is this?", "X-Ray"), ("is it normal?", "No.")])]
    batch = module.on_before_batch_transfer(model.collate()(items), 0)  # the host-side target check passes
    toks = module._tokens(batch)
    cand = dict(zip(model.answer_candidates, model.candidate_ids.tolist()))
    assert toks["answer_ids"][0, : toks["answer_mask"][0].sum()].tolist() == [t for t in cand["xray"] if t]
    assert toks["answer_ids"][1, : toks["answer_mask"][1].sum()].tolist() == [t for t in cand["no"] if t]
    px = torch.randn(2, 3, 32, 32)
    assert torch.isfinite(model(px, **toks))  # every target token is inside the restricted vocabulary


def test_blank_batch_shares_one_image_with_identical_loss_and_gradients(tmp_path):
    """The question-only baseline encodes its blank image once per batch: same loss, gradients and
    ranking as encoding one blank copy per question (conv stem included, whose BatchNorm sees batch
    statistics)."""
    root = make_shapes_dataset(tmp_path / "d", n_images=6)
    recs = load_split(root, "train")[:4]
    ds = VQADataset(root, recs, build_eval_transform(32), image_size=32, blank_images=True)
    shared = collate_vqa([ds[i] for i in range(len(ds))])
    assert shared["pixel_values"].shape == (1, 3, 32, 32) and len(shared["question"]) == 4
    copies = shared["pixel_values"].expand(4, -1, -1, -1).clone()
    model = build(["model.image_encoder.stem=conv", "model.fusion.dropout=0", "model.gca.dropout=0",
                   "model.decoder.dropout=0"])
    q, qm = model.tokenize_questions(shared["question"])
    a, am = model.tokenize_answers(["yes", "no", "left", "2"])
    grads = []
    for px in (shared["pixel_values"], copies):
        model.zero_grad()
        torch.manual_seed(0)  # same dropout masks (the text encoder keeps its own dropout)
        loss = model(px, q, qm, a, am)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.image_encoder.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert len(grads[0][1]) > 0 and all(torch.allclose(g0, g1, atol=1e-4) for g0, g1 in zip(grads[0][1], grads[1][1]))
    model.eval()
    r1, r2 = model.rank(shared["pixel_values"], q, qm), model.rank(copies, q, qm)
    assert torch.equal(r1.indices, r2.indices) and torch.allclose(r1.log_likelihood, r2.log_likelihood, atol=1e-4)
    # images that are not blank are stacked one per question, as before
    ds_img = VQADataset(root, recs, build_eval_transform(32), image_size=32)
    assert collate_vqa([ds_img[i] for i in range(4)])["pixel_values"].shape == (4, 3, 32, 32)
