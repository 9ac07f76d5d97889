"""Fast answer ranking (amif.models.ranking) against the published code's way of computing it, and the
GCA prior cache, image grouping and single fused validation pass that feed it."""

import pytest
import torch

from amif.models.ranking import rank_candidates
from amif.models.vqa import AMiFVQA
from amif_train.config import load_config

from helpers import MICRO, TINY_CONFIG, make_shapes_dataset

# answers of 1 to 4 word pieces, so that a top-k selection is usually shorter than the longest
CANDIDATES = ["yes", "no", "left", "right", "computed tomography", "magnetic resonance imaging",
              "2", "lower lobe of the left lung", "brain"]
VOCAB = ["yes", "no", "left", "right", "ct", "mri", "brain", "lung"]
QUESTIONS = ("is this a ct scan?", "which side is the lesion on?", "what organ is shown?")
TWO_LAYER_DECODER = ["model.decoder.num_layers=2", "model.decoder.cross_attention_from=1"]


def build(extra=()):
    torch.manual_seed(0)
    cfg = load_config(TINY_CONFIG, MICRO + list(extra)).model
    return AMiFVQA(cfg, CANDIDATES, VOCAB).eval()


def _inputs(model, n_images=3):
    q, qm = model.tokenize_questions(list(QUESTIONS))
    torch.manual_seed(1)
    return torch.randn(n_images, 3, 32, 32), q, qm


def _assert_same(fast, ref):
    assert torch.equal(fast.indices, ref.indices)
    assert torch.allclose(fast.log_likelihood, ref.log_likelihood, atol=1e-5)
    assert torch.allclose(fast.probs, ref.probs, atol=1e-5)


@pytest.mark.parametrize("extra, k", [
    (TWO_LAYER_DECODER, len(CANDIDATES)),                                    # k = all candidates
    (TWO_LAYER_DECODER, 3),                                                  # k < C
    (["model.decoder.output_vocabulary=answers"], 4),                        # restricted output vocabulary
    (["model.gca.enabled=false"] + TWO_LAYER_DECODER, 5),                    # GCA switched off
])
def test_fast_ranking_equals_the_reference_path(extra, k):
    model = build(extra)
    px, q, qm = _inputs(model)
    _assert_same(model.rank(px, q, qm, k=k), model.rank(px, q, qm, k=k, reference=True))


def test_one_image_shared_by_a_batch_of_questions_is_encoded_once():
    model = build(TWO_LAYER_DECODER)
    px, q, qm = _inputs(model, n_images=2)
    index = torch.tensor([1, 1, 1])  # every question is about image 1
    rows = []
    hook = model.image_encoder.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    fast = model.rank(px, q, qm, k=4, image_index=index)
    ref = model.rank(px, q, qm, k=4, image_index=index, reference=True)
    hook.remove()
    assert rows == [1, 3]  # fast: the one image; reference: one copy per question
    _assert_same(fast, ref)
    _assert_same(fast, model.rank(px[index], q, qm, k=4))


def test_collate_groups_identical_images_and_evaluation_encodes_each_once(tmp_path, monkeypatch):
    from amif.data.collate import collate_vqa
    from amif.data.records import load_split
    from amif.data.transforms import build_eval_transform, build_train_transform
    from amif.data.vqa_dataset import VQADataset
    from amif.evaluation import evaluate_dataset

    root = make_shapes_dataset(tmp_path / "d", n_images=6)
    recs = load_split(root, "train")[:6]  # 3 images, 2 questions each, in image order
    ds = VQADataset(root, recs, build_eval_transform(32), image_size=32)
    batch = collate_vqa([ds[i] for i in range(len(ds))])
    assert batch["image_index"].tolist() == [0, 0, 2, 2, 4, 4] and batch["pixel_values"].shape[0] == 6
    augmented = VQADataset(root, recs, build_train_transform(32, scale=(0.5, 1.0)), image_size=32)
    torch.manual_seed(0)
    assert collate_vqa([augmented[i] for i in range(2)])["image_index"].tolist() == [0, 1]  # pixels differ
    model = build()
    rows = []
    hook = model.image_encoder.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    grouped, _ = evaluate_dataset(model, ds, batch_size=6)
    assert rows == [3]
    monkeypatch.setattr("amif.evaluation.collate_vqa", lambda items: {
        k: v for k, v in collate_vqa(items).items() if k != "image_index"})
    plain, _ = evaluate_dataset(model, ds, batch_size=6)
    hook.remove()
    assert rows == [3, 6]
    for g, p in zip(grouped, plain, strict=True):
        assert [a["answer"] for a in g["ranked"]] == [a["answer"] for a in p["ranked"]]
        assert [a["prob"] for a in g["ranked"]] == pytest.approx([a["prob"] for a in p["ranked"]], abs=1e-5)


def test_keys_and_values_are_projected_once_per_question_and_candidates_trimmed(monkeypatch):
    model = build(TWO_LAYER_DECODER)
    px, q, qm = _inputs(model)
    k = 3
    longest = int(model.candidate_mask.sum(1).argmax())  # keep it out of every top k
    first = model.candidate_ids[:, 1]
    assert (first == first[longest]).sum() == 1
    with torch.no_grad():
        model.decoder.head_bias[first[longest]] = -100.0
    key_rows, widths = [], []
    hook = model.decoder.layers[1].cross_attn.key.register_forward_hook(
        lambda m, args, out: key_rows.append(args[0].shape[0]))
    hidden = model.decoder.hidden_states

    def spy(ids, *args, **kw):
        widths.append(ids.shape)
        return hidden(ids, *args, **kw)

    monkeypatch.setattr(model.decoder, "hidden_states", spy)
    r = model.rank(px, q, qm, k=k)
    assert key_rows == [len(QUESTIONS)]  # shared by the first-token pass and all k candidates
    # the candidates continue from the first-token pass: first answer token to the last selected one
    selected = int(model.candidate_mask[r.indices].sum(-1).max())
    assert widths == [(3, 1), (3 * k, selected - 2)] and selected < model.candidate_ids.shape[1]
    key_rows.clear()
    model.rank(px, q, qm, k=k, reference=True)
    hook.remove()
    assert key_rows == [len(QUESTIONS), len(QUESTIONS) * k]


def test_sequence_scores_do_not_materialise_a_log_softmax(monkeypatch):
    model = build()
    px, q, qm = _inputs(model)
    context, cmask = model.fuse(px, q, qm)
    ids, mask = model.tokenize_answers(["lower lobe of the left lung", "no", "brain"])
    with torch.no_grad():
        logits = model.decoder(ids[:, :-1], None, context, cmask)
        expected = (logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]).sum(-1)

    def forbidden(*a, **kw):
        raise AssertionError("log_softmax called")

    monkeypatch.setattr(torch.Tensor, "log_softmax", forbidden)
    with torch.no_grad():
        got = model.decoder.sequence_log_likelihood(ids, mask, context, cmask)
    assert torch.allclose(got, expected, atol=1e-5)


def test_rank_candidates_with_a_grouped_context_equals_repeated_context():
    model = build(TWO_LAYER_DECODER)
    px, q, qm = _inputs(model)
    with torch.no_grad():
        context, cmask = model.fuse(px, q, qm)
        r = rank_candidates(model.decoder, model.candidate_ids, model.candidate_mask, context, cmask, k=2)
        ids = model.candidate_ids[r.indices].flatten(0, 1)
        mask = model.candidate_mask[r.indices].flatten(0, 1)
        repeated = model.decoder.sequence_log_likelihood(
            ids, mask, context.repeat_interleave(2, 0), cmask.repeat_interleave(2, 0)).view(3, 2)
    assert torch.allclose(r.log_likelihood, repeated, atol=1e-5)


# ---------------------------------------------------------------------- the GCA prior cache
def _count_prior_passes(model):
    calls = []
    original = model.gca.encode_prior
    model.gca.encode_prior = lambda *a, **kw: calls.append(1) or original(*a, **kw)
    return calls


def test_prior_branch_is_cached_in_eval_mode_and_invalidated_by_an_optimiser_step():
    model = build(["model.gca.dropout=0", "model.fusion.dropout=0", "model.decoder.dropout=0"])
    calls = _count_prior_passes(model)
    px, q, qm = _inputs(model)
    a, am = model.tokenize_answers(["yes", "left", "brain"])
    with torch.no_grad():
        first = model.rank(px, q, qm, k=4)
        again = model.rank(px, q, qm, k=4)
    assert len(calls) == 1 and torch.equal(first.log_likelihood, again.log_likelihood)
    # an optimiser step changes the weights in place (still in eval mode): the cache must not serve
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(px, q, qm, a, am).backward()  # gradients on: computed, not cached
    opt.step()
    n = len(calls)
    with torch.no_grad():
        after = model.rank(px, q, qm, k=4)
    assert len(calls) == n + 1
    _assert_same(after, model.rank(px, q, qm, k=4, reference=True))
    assert not torch.allclose(after.log_likelihood, first.log_likelihood, atol=1e-3)


def test_prior_cache_follows_vocabulary_mode_weights_and_dtype():
    model = build()
    calls = _count_prior_passes(model)
    with torch.no_grad():
        p1 = model.encoded_prior()
        assert model.encoded_prior() is p1 and len(calls) == 1
        model.set_vocabulary(VOCAB[:3])  # a new vocabulary
        p2 = model.encoded_prior()
        assert len(calls) == 2 and p2.shape[1] < p1.shape[1]
        model.train().eval()  # a mode change drops it
        model.encoded_prior()
        assert len(calls) == 3
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["gca.prior_attn.query.weight"] += 0.1
        model.load_state_dict(state)  # new weights copied in place
        p3 = model.encoded_prior()
        assert len(calls) == 4 and not torch.allclose(p3, p2)
        model.double()
        assert model.encoded_prior().dtype == torch.float64 and len(calls) == 5
        model.train()
        model.encoded_prior()
        model.encoded_prior()  # training mode: computed every time (dropout), never cached
        assert len(calls) == 7
    model.eval()
    model.encoded_prior()
    model.encoded_prior()  # gradients recorded: never cached
    assert len(calls) == 9


def test_validation_fuses_once_for_loss_and_ranking(monkeypatch):
    from amif_train.config import FinetuneRunConfig
    from amif_train.vqa_module import VQAModule

    model = build()
    module = VQAModule(model, FinetuneRunConfig())
    monkeypatch.setattr(module, "log", lambda *a, **kw: None)
    px, _, _ = _inputs(model)
    batch = {"pixel_values": px, "question": list(QUESTIONS), "answer": ["yes", "left", "brain"],
             "answer_type": ["CLOSED", "OPEN", "OPEN"], "question_type": ["modality", "position", "organ"],
             "image_index": torch.tensor([0, 1, 1])}
    batch["question_ids"], batch["question_mask"] = model.tokenize_questions(batch["question"])
    batch["answer_ids"], batch["answer_mask"] = model.tokenize_answers(batch["answer"])
    fuse, calls = model.fuse, []
    monkeypatch.setattr(model, "fuse", lambda *a, **kw: calls.append(1) or fuse(*a, **kw))
    with torch.no_grad():
        module.validation_step(batch, 0)
    assert calls == [1] and module.val_metric.compute()["n_overall"] == 3
