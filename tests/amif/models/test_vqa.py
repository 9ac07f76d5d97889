"""The assembled VQA model: loss, ranking against brute force, GCA switch, persistence."""

import pytest
import torch

from amif.errors import CheckpointError
from amif.models.vqa import AMiFVQA
from amif_train.config import load_config

from helpers import MICRO, TINY_CONFIG

CANDIDATES = ["yes", "no", "left", "right", "computed tomography", "magnetic resonance imaging", "2"]


def build(extra=()):
    torch.manual_seed(0)
    cfg = load_config(TINY_CONFIG, MICRO + list(extra)).model
    return AMiFVQA(cfg, CANDIDATES, ["yes", "no", "left", "right", "ct", "mri"])


@pytest.fixture(scope="module")
def model():
    return build()


def _inputs(model, questions=("is this a ct scan?", "which side is the lesion on?")):
    q, qm = model.tokenize_questions(list(questions))
    torch.manual_seed(1)
    return torch.randn(len(questions), 3, 32, 32), q, qm


def test_fused_shapes(model):
    px, q, qm = _inputs(model)
    fused, mask = model.fuse(px, q, qm)
    n_img = 1 + (32 // 8) ** 2
    assert fused.shape == (2, q.shape[1] + n_img, 48)
    assert mask.shape == fused.shape[:2] and mask[:, -n_img:].all()


def test_question_padding_does_not_change_predictions(model):
    model.eval()
    px, q, qm = _inputs(model, ("is this a ct scan?",))
    pad = torch.zeros(1, 5, dtype=q.dtype)
    r1 = model.rank(px, q, qm, k=7)
    r2 = model.rank(px, torch.cat([q, pad], 1), torch.cat([qm, pad], 1), k=7)
    assert torch.equal(r1.indices, r2.indices)
    assert torch.allclose(r1.log_likelihood, r2.log_likelihood, atol=1e-4)


def _brute_force(model, px, q, qm):
    """Log-likelihood of every candidate, one at a time."""
    context, cmask = model.fuse(px, q, qm)
    scores = []
    for c in model.answer_candidates:
        ids, mask = model.tokenize_answers([c] * px.shape[0])
        scores.append(model.decoder.sequence_log_likelihood(ids, mask, context, cmask))
    return torch.stack(scores, 1)


def test_rank_matches_brute_force(model):
    model.eval()
    px, q, qm = _inputs(model)
    with torch.no_grad():
        brute = _brute_force(model, px, q, qm)
    full = model.rank(px, q, qm, k=len(CANDIDATES))
    assert torch.equal(full.indices[:, 0], brute.argmax(1))
    assert torch.allclose(full.log_likelihood, brute.sort(1, descending=True).values, atol=1e-4)
    assert torch.allclose(full.probs.sum(1), torch.ones(2))
    # with k < C the winner is the best full-sequence score among the top-k first tokens
    k = 3
    r = model.rank(px, q, qm, k=k)
    with torch.no_grad():
        context, cmask = model.fuse(px, q, qm)
        first = model.decoder(model.candidate_ids[:1, :1].expand(2, 1), torch.ones(2, 1, dtype=torch.bool),
                              context, cmask)[:, 0].log_softmax(-1)[:, model.candidate_ids[:, 1]]
    for b in range(2):
        top = first[b].topk(k).indices
        assert r.indices[b, 0] == top[brute[b, top].argmax()]
        assert set(r.indices[b].tolist()) == set(top.tolist())


def test_loss_decreases_when_memorising_a_batch():
    model = build(["model.fusion.dropout=0.0", "model.gca.dropout=0.0", "model.decoder.dropout=0.0"])
    px, q, qm = _inputs(model)
    a, am = model.tokenize_answers(["computed tomography", "right"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    model.train()
    losses = []
    for _ in range(25):
        loss = model(px, q, qm, a, am)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    r = model.rank(px, q, qm)
    assert [model.answer_candidates[i] for i in r.indices[:, 0].tolist()] == ["computed tomography", "right"]


def test_gca_can_be_switched_off():
    off = build(["model.gca.enabled=false"])
    assert off.gca is None
    assert not any(k.startswith("gca.") for k in off.state_dict())
    px, q, qm = _inputs(off)
    a, am = off.tokenize_answers(["yes", "no"])
    assert torch.isfinite(off(px, q, qm, a, am))


def test_vocabulary_is_a_word_set_prior(model):
    words = model.tokenizer.convert_ids_to_tokens(model.prior_ids[0].tolist())
    assert words[0] == "[CLS]" and words[-1] == "[SEP]"
    assert "no" in words and "yes" in words


def test_save_and_load_round_trip(model, tmp_path):
    model.eval()
    model.meta = {"protocol": "clean"}
    model.save_pretrained(tmp_path / "m")
    loaded = AMiFVQA.from_pretrained(tmp_path / "m").eval()
    px, q, qm = _inputs(model)
    r1, r2 = model.rank(px, q, qm), loaded.rank(px, q, qm)
    assert torch.equal(r1.indices, r2.indices) and torch.equal(r1.probs, r2.probs)
    assert loaded.answer_candidates == model.answer_candidates and loaded.meta == {"protocol": "clean"}


def test_load_errors_name_the_problem(model, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        AMiFVQA.from_pretrained(tmp_path / "nope")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        AMiFVQA.from_pretrained(tmp_path / "m")
    from safetensors.torch import save_file

    bigger = build(["model.fusion.intermediate_size=100"])
    save_file({k: v.contiguous() for k, v in bigger.state_dict().items()}, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"fusion\.text_layers\.0\.ffn\.fc1\.weight: expected \(96, 48\), got \(100, 48\)"):
        AMiFVQA.from_pretrained(tmp_path / "m")


def test_encoder_weights_from_pretraining_checkpoint(model, tmp_path):
    from safetensors.torch import save_file

    other = build()
    with torch.no_grad():
        for p in list(other.fusion.parameters()) + list(other.gca.parameters()):
            p.add_(1.0)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "pre.safetensors"))
    target = build()
    loaded = target.load_encoder_weights(tmp_path / "pre.safetensors")
    assert loaded and all(k.startswith(("image_encoder.", "text_encoder.", "fusion.")) for k in loaded)
    assert torch.equal(target.fusion.text_proj.weight, other.fusion.text_proj.weight)
    assert not torch.equal(target.gca.gate.weight, other.gca.gate.weight)  # GCA keeps its own init
