"""The paper's pre-training config with BiomedCLIP as released: one teacher cache over two corpora.

``amif teacher-cache`` embeds two tiny corpora (whose record ids repeat) with a tiny BiomedCLIP in the
released open_clip layout; ``amif pretrain --config configs/paper/pretrain_stage0.yaml`` (paths and
sizes overridden to tiny ones) then trains once with the online teacher and once with the cache, and
the logged losses agree.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from amif.data.records import CaptionRecord, read_caption_records, write_records
from amif.errors import DataError
from amif.testing.biomedclip import write_biomedclip
from amif_train.cli import main as cli_main
from amif_train.config import PretrainConfig, load_config
from amif_train.pretrain import run_pretrain

from helpers import CONFIGS, MICRO, make_caption_dataset

PAPER = CONFIGS / "paper" / "pretrain_stage0.yaml"


@pytest.fixture(scope="module")
def corpora(module_tmp):
    """Two caption corpora with the same record ids; in each, two records are views of one study."""
    base = module_tmp("corpora")
    roots = []
    for seed, name in enumerate(("a", "b")):
        root = make_caption_dataset(base / name, {"train": 2}, seed=seed)
        recs = read_caption_records(root / "captions_train.jsonl")
        recs = [CaptionRecord(id=r.id, image=r.image, caption=r.caption, split=r.split,
                              study_id="s0" if i < 2 else None) for i, r in enumerate(recs)]
        recs[1] = CaptionRecord(id=recs[1].id, image=recs[1].image, caption=recs[0].caption, split="train",
                                study_id="s0")
        write_records(root / "captions_train.jsonl", recs)
        roots.append(root)
    return roots


def _paper(corpora, out: Path, teacher: str, *extra: str) -> list[str]:
    corpus_list = json.dumps([{"kind": "captions", "root": str(corpora[0]), "name": "mimic_cxr"},
                              {"kind": "captions", "root": str(corpora[1]), "name": "roco"}])
    return MICRO + [
        "model.text_encoder.path=minilm", "model.image_encoder.pretrained=null", "model.fusion.dropout=0.0",
        f"data.corpora={corpus_list}", "data.val=null", "data.num_workers=0",
        f"losses.teacher={teacher}", "losses.teacher_trust_remote_code=false",
        f"run.output_dir={out}", "run.accelerator=cpu", "run.devices=1", "run.strategy=auto",
        "run.precision=32-true", "run.global_batch_size=null", "run.batch_size=4", "run.max_steps=3", "run.max_epochs=1",
        "run.val_check_interval=null", "run.log_every_n_steps=1", "run.cpu_threads=1", *extra,
    ]


def _train_losses(out: Path) -> list[float]:
    with (out / "logs" / "metrics.csv").open() as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_teacher_cache_over_two_corpora_matches_the_online_teacher(corpora, tmp_path, capsys):
    bc = tmp_path / "BiomedCLIP"
    write_biomedclip(bc)
    cache = tmp_path / "cache" / "biomedclip.safetensors"
    args = ["teacher-cache", "--config", str(PAPER), "--teacher", str(bc), "--out", str(cache),
            *_paper(corpora, tmp_path / "unused", str(bc))]
    assert cli_main(args) == 0
    assert "mimic_cxr (8), roco (8)" in capsys.readouterr().out
    index = json.loads(cache.with_suffix(".json").read_text())
    assert index["corpus_counts"] == {"mimic_cxr": 8, "roco": 8} and len(set(index["ids"])) == 8
    # the --corpus / --name form writes the same cache
    again = tmp_path / "again.safetensors"
    assert cli_main(["teacher-cache", "--teacher", str(bc), "--out", str(again), "--corpus", "captions",
                     "--root", str(corpora[0]), "--name", "mimic_cxr", "--corpus", "captions", "--root",
                     str(corpora[1]), "--name", "roco"]) == 0
    first, second = load_file(str(cache)), load_file(str(again))
    assert json.loads(again.with_suffix(".json").read_text())["ids"] == index["ids"]
    for key in ("image", "text"):
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=1e-6)

    online_out, cached_out = tmp_path / "online", tmp_path / "cached"
    assert cli_main(["pretrain", "--config", str(PAPER), *_paper(corpora, online_out, str(bc))]) == 0
    assert cli_main(["pretrain", "--config", str(PAPER), *_paper(corpora, cached_out, str(cache))]) == 0
    online, cached = _train_losses(online_out), _train_losses(cached_out)
    assert len(online) == 3 and len(cached) == 3
    assert json.loads((cached_out / "summary.json").read_text())["teacher"] == "cache:BiomedCLIP"
    assert cached == pytest.approx(online, rel=1e-5)
    # a teacher that differs from the cached one gives other losses: the comparison can fail
    other = tmp_path / "other"
    write_biomedclip(other, seed=5)
    other_out = tmp_path / "other_run"
    assert cli_main(["pretrain", "--config", str(PAPER), *_paper(corpora, other_out, str(other), "run.max_steps=1")]) == 0
    assert _train_losses(other_out)[0] != pytest.approx(online[0], rel=1e-4)


def test_a_row_missing_from_the_cache_names_corpus_and_id(corpora, tmp_path):
    bc = tmp_path / "bc"
    write_biomedclip(bc)
    cache = tmp_path / "only_a.safetensors"
    assert cli_main(["teacher-cache", "--teacher", str(bc), "--out", str(cache), "--corpus", "captions",
                     "--root", str(corpora[0]), "--name", "mimic_cxr"]) == 0
    cfg = load_config(PAPER, _paper(corpora, tmp_path / "out", str(cache), "run.max_steps=1"), cls=PretrainConfig)
    with pytest.raises(DataError, match=r"record corpus 'roco' id '[^']+' is not in the teacher cache"):
        run_pretrain(cfg)
