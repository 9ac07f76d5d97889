"""Both evaluation protocols on a prepared official-layout fixture: results name the protocol and differ."""

import json

from amif.data.prepare import prepare_dataset
from amif.models.vqa import AMiFVQA
from amif_train.config import load_config
from amif_train.finetune import run_finetune

from fixtures_official import build_slake
from helpers import MICRO, TINY_CONFIG


def test_clean_and_paper_protocols(tmp_path):
    data = tmp_path / "slake"
    prepare_dataset("slake", build_slake(tmp_path / "src"), data)
    results = {}
    for protocol in ("clean", "paper"):
        out = tmp_path / protocol
        cfg = load_config(TINY_CONFIG, MICRO + [f"data.root={data}", f"run.output_dir={out}", "run.max_epochs=1",
                                                "run.batch_size=2", f"data.protocol={protocol}"])
        run_finetune(cfg)
        results[protocol] = json.loads((out / "results_test.json").read_text())
        model = AMiFVQA.from_pretrained(out / "model")
        assert model.meta["protocol"] == protocol
        results[protocol]["candidates"] = model.answer_candidates
    clean, paper = results["clean"], results["paper"]
    assert clean["protocol"] == "clean" and paper["protocol"] == "paper"
    assert "LEAKY" in paper["protocol_description"] and "LEAKY" not in clean["protocol_description"]
    # the test-only answer "MRI" is a candidate only under the leaky protocol
    assert "mri" not in clean["candidates"] and paper["candidates"] == ["mri"]
    assert clean["metrics"]["n_answer_not_in_candidates"] == 1 and clean["metrics"]["overall"] == 0.0
    assert paper["metrics"]["n_answer_not_in_candidates"] == 0 and paper["metrics"]["overall"] == 1.0
