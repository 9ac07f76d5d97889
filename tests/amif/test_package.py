"""The package surface (amif/__init__.py): version, load_model, the predictor, a cheap import."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

import amif
from amif.errors import CheckpointError

from helpers import MICRO, TINY_CONFIG, save_micro_model


def test_version_is_the_distribution_version():
    from importlib.metadata import version

    assert amif.__version__ == version("amif") and amif.__version__[0].isdigit()


def test_import_amif_loads_no_torch():
    code = "import sys, amif; amif.list_models(); print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_load_model_from_a_model_folder_or_its_run_folder(tmp_path):
    folder = save_micro_model(tmp_path / "run" / "model")
    direct, via_run = amif.load_model(folder), amif.load_model(tmp_path / "run")
    a, b = direct.state_dict(), via_run.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert direct.answer_candidates[:2] == ["yes", "no"]
    predictor = amif.VQAPredictor(direct)
    assert len(predictor.answer(Image.new("RGB", (40, 40)), "is it normal?", top_k=2)) == 2
    with pytest.raises(CheckpointError, match=r"^model folder not found: .*empty$"):
        amif.load_model(tmp_path / "empty")
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match=r"^model folder .*half is incomplete: missing amif_model.json"):
        amif.VQAPredictor.from_pretrained(tmp_path / "half")
    with pytest.raises(AttributeError):
        amif.NoSuchThing  # noqa: B018


def test_load_model_from_a_pretraining_folder(tmp_path):
    from amif.models.pretrain import AMiFPretrainModel
    from amif_train.config import load_config

    saved = AMiFPretrainModel(load_config(TINY_CONFIG, MICRO).model, stage=1)
    loaded = amif.load_model(saved.save(tmp_path / "pt"))
    assert isinstance(loaded, AMiFPretrainModel) and loaded.stage == 1
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in saved.state_dict().items())
