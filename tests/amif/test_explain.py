"""Explanations: ranked answers, patch heatmap (gradient x activation), GCA words and gate, the PNG and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amif.errors import DataError
from amif.explain import explain_batch, patch_mask, vocabulary_spans
from amif.explain_figure import save_explanation_png
from amif.inference import VQAPredictor
from amif_train.cli import main as cli_main

from helpers import save_micro_model, write_test_images


@pytest.fixture(scope="module")
def files(module_tmp):
    tmp = module_tmp("explain")
    return {"model": save_micro_model(tmp / "model"), **write_test_images(tmp / "images")}


@pytest.fixture(scope="module")
def predictor(files):
    return VQAPredictor.from_pretrained(files["model"])


def test_answers_match_predict_and_arrays_are_well_formed(predictor, files):
    expl = predictor.explain(files["png"], "Is there a lesion on the left?", top_k=3)
    ranked = predictor.answer(files["png"], "Is there a lesion on the left?", top_k=3)
    assert list(zip(expl.answers, expl.probs)) == ranked
    assert expl.heatmap.shape == (4, 4) and (expl.heatmap >= 0).all()
    assert expl.heatmap.max() == pytest.approx(1.0)
    vocab = set(predictor.model.vocabulary)
    assert expl.gca_words and all(w in vocab for w, _ in expl.gca_words)
    weights = [v for _, v in expl.gca_words]
    assert weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1 + 1e-6
    assert 0 < expl.gate_mean < 1
    assert json.loads(json.dumps(expl.to_json()))["answers"][0]["answer"] == expl.answer


def test_heatmap_is_gradient_times_activation_of_the_answer_probability(predictor, files):
    """Recompute the heat without hooks: differentiate log p(best answer) w.r.t. the patch tokens."""
    model = predictor.model
    question = "is there a lesion on the left"
    pixels = predictor.transform(predictor.explain(files["png"], question).image.convert("RGB"))[None]
    expl = explain_batch(model, pixels, question)
    ids, mask = model.tokenize_questions([question])
    order = model.rank(pixels, ids, mask).indices[0]
    tokens = model.image_encoder(pixels).detach().requires_grad_(True)
    original = model.encode_image
    model.encode_image = lambda _px: tokens
    try:
        context, cmask = model.fuse(pixels, ids, mask)
        k = len(order)
        ll = model.decoder.sequence_log_likelihood(model.candidate_ids[order], model.candidate_mask[order],
                                                   context.expand(k, -1, -1), cmask.expand(k, -1))
        ll.log_softmax(0)[0].backward()
    finally:
        model.encode_image = original
    heat = (tokens.grad[0, 1:] * tokens[0, 1:]).sum(-1).clamp(min=0).detach().view(4, 4).numpy()
    np.testing.assert_allclose(expl.heatmap, heat / heat.max(), rtol=1e-4, atol=1e-6)
    model.zero_grad(set_to_none=True)
    predictor.explain(files["png"], question)
    assert all(p.grad is None for p in model.parameters())  # explaining leaves no gradients behind


def test_gate_mean_matches_the_gca_gate(predictor, files):
    model = predictor.model
    question = "which side is the lesion on"
    pixels = torch.rand(1, 3, 32, 32)
    expl = explain_batch(model, pixels, question)
    ids, mask = model.tokenize_questions([question])
    seen = {}
    original = model.gca.read  # fuse reads the (cached) prior through GatedCrossAttention.read
    model.gca.read = lambda *a, **kw: seen.setdefault("out", original(*a, **{**kw, "return_gate": True}))[0]
    try:
        with torch.no_grad():
            model.fuse(pixels, ids, mask)
    finally:
        model.gca.read = original
    gate = seen["out"][1][0]  # [Lq + Li, D]; every position is real for one question
    assert expl.gate_mean == pytest.approx(float(gate.mean()), rel=1e-5)


def test_context_method_and_bad_method(predictor, files):
    expl = predictor.explain(files["jpeg"], "is this a ct scan", method="context")
    assert expl.heatmap.shape == (4, 4) and expl.method == "context"
    with pytest.raises(ValueError, match="method"):
        predictor.explain(files["jpeg"], "is this a ct scan", method="rollout")


def test_multiword_vocabulary_entries_keep_all_their_pieces(predictor):
    spans = dict(vocabulary_spans(predictor.model))
    assert set(spans) == set(predictor.model.vocabulary)
    ids = predictor.model.prior_ids[0]
    pieces = predictor.model.tokenizer.convert_ids_to_tokens(ids[spans["computed tomography"]].tolist())
    assert predictor.model.tokenizer.convert_tokens_to_string(pieces) == "computed tomography"


def test_patch_mask_marks_the_patches_a_lesion_covers():
    m = patch_mask([{"center_px": [10, 30], "diameter_px": 6}], (64, 64), 4)
    assert m.sum() == 1 and m[0, 1]
    m = patch_mask([{"center_px": [32, 32], "diameter_px": 4}], (64, 64), 4)
    assert m.sum() == 4 and m[1:3, 1:3].all()


def test_png_has_image_overlay_and_text(predictor, files, tmp_path):
    path = save_explanation_png(predictor.explain(files["dicom"], "is there a lesion"), tmp_path / "e.png")
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == (1200, 400)
        assert len(set(im.convert("RGB").getdata())) > 50  # a picture, not a blank canvas


@pytest.mark.parametrize("kind", ["png", "jpeg", "dicom"])
def test_explain_command_writes_a_png(files, tmp_path, capsys, kind):
    out = tmp_path / f"{kind}.png"
    assert cli_main(["explain", "--model", str(files["model"]), "--image", str(files[kind]),
                     "--question", "Is there a lesion?", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert out.is_file() and doc["png"] == str(out) and len(doc["heatmap"]) == 4


@pytest.mark.parametrize("kind,question,needle", [("corrupt_dicom", "is there a lesion", "broken.dcm"),
                                                  ("not_image", "is there a lesion", "notes.png"),
                                                  ("png", "?!", "question is empty")])
def test_explain_command_bad_input_is_one_line(files, tmp_path, capsys, kind, question, needle):
    code = cli_main(["explain", "--model", str(files["model"]), "--image", str(files[kind]),
                     "--question", question, "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "\n" not in err and "Traceback" not in err


def test_empty_question_is_a_data_error(predictor, files):
    with pytest.raises(DataError):
        predictor.explain(files["png"], "   ")
