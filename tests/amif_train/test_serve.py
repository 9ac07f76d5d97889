"""``amif serve``'s request handler and example picker, without a browser (tests/amif_train/test_serve_browser.py has one)."""

from __future__ import annotations

import pytest

from amif.inference import VQAPredictor
from amif_train.serve import answer_page, build_app, example_rows

from helpers import make_shapes_dataset, save_micro_model, write_test_images


@pytest.fixture(scope="module")
def setup(module_tmp):
    tmp = module_tmp("serve")
    return {"predictor": VQAPredictor.from_pretrained(save_micro_model(tmp / "model")),
            "data": make_shapes_dataset(tmp / "data", n_images=20), **write_test_images(tmp / "img")}


@pytest.mark.parametrize("kind", ["png", "jpeg", "dicom"])
def test_answers_and_heatmap(setup, kind):
    label, heat, text = answer_page(setup["predictor"], str(setup[kind]), "Is there a lesion?")
    assert len(label) == 5 and 5 / 6 - 1e-6 <= sum(label.values()) <= 1 + 1e-6  # top 5 of 6 candidates
    assert heat.ndim == 3 and heat.shape[2] == 3 and heat.dtype.name == "uint8"
    assert text.startswith("**Answer: ") and "GCA reads most" in text


@pytest.mark.parametrize("kind,question,needle", [("not_image", "is there a lesion", "notes.png"),
                                                  ("corrupt_dicom", "is there a lesion", "broken.dcm"),
                                                  ("png", "", "question is empty")])
def test_bad_input_is_a_message(setup, kind, question, needle):
    label, heat, text = answer_page(setup["predictor"], str(setup[kind]), question)
    assert label is None and heat is None
    assert text.startswith("**Could not use this input:**") and needle in text and "\n" not in text
    assert str(setup[kind].parent) not in text  # the (temporary) folder of the upload is not shown


def test_no_upload_asks_for_one(setup):
    assert answer_page(setup["predictor"], None, "is there a lesion")[2].startswith("**Please upload")


def test_examples_and_app(setup):
    rows = example_rows(setup["data"])
    assert 0 < len(rows) <= 8 and all(p.endswith(".png") and q for p, q in rows)
    assert build_app(setup["predictor"], rows) is not None
