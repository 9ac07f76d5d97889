"""Hardened readers: corrupted official-layout inputs give a DataError naming file and record (or a counted
skip with ``skip_bad``), never a traceback, a half-written output folder or an invalid record."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import struct
from pathlib import Path

import pytest

from amif.data.check import check_dataset
from amif.data.prepare import prepare_dataset
from amif.data.records import load_split, read_vqa_records
from amif.errors import DataError

from fixtures_official import build_pathvqa, build_slake, pathvqa_rows, slake_rows


def slake_with(tmp_path: Path, **changes) -> Path:
    rows = slake_rows()
    rows["train"][0].update(changes)
    return ascii_json(build_slake(tmp_path / "src"), rows)


def ascii_json(src: Path, rows: dict) -> Path:
    """Rewrite the question files with JSON escapes (``\\ud800``), as a lone surrogate reaches a reader."""
    for split, name in (("train", "train.json"), ("val", "validate.json"), ("test", "test.json")):
        (src / name).write_text(json.dumps(rows[split]), encoding="ascii")
    return src


def assert_untouched_or_complete(out: Path) -> None:
    """A conversion either wrote nothing or a complete folder (``prepare.json`` present)."""
    if out.exists() and any(out.iterdir()):
        assert (out / "prepare.json").is_file()
        assert not [p for p in out.rglob("*") if ".amif-tmp-" in p.name]


BAD_ROWS = {
    "surrogate_question": {"question": "Which organ\ud800?"},
    "surrogate_image": {"img_name": "xmlab0/\udcffsource.jpg"},
    "long_image_name": {"img_name": "xmlab0/" + "a" * 300 + ".jpg"},
    "nan_answer": {"answer": float("nan")},
    "inf_answer": {"answer": float("inf")},
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_an_error_naming_the_row_or_a_counted_skip(tmp_path, case):
    src = slake_with(tmp_path, **BAD_ROWS[case])
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        prepare_dataset("slake", src, out)
    msg = str(e.value)
    assert "train.json" in msg and "#1" in msg and "\n" not in msg
    if case == "long_image_name":
        assert "not found" in msg
    assert_untouched_or_complete(out)
    summary = prepare_dataset("slake", src, out, skip_bad=True)  # no --overwrite needed: nothing half-written
    assert summary["n_skipped"] == 1 and "#1" in summary["skipped"][0]["record"]
    answers = [r.answer for s in ("train", "val", "test") for r in load_split(out, s)]
    assert not {"nan", "inf", "-inf"} & {a.lower() for a in answers}


def test_json_nested_too_deeply(tmp_path):
    src = build_slake(tmp_path / "src")
    (src / "train.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="train.json.*nested too deeply"):
        prepare_dataset("slake", src, tmp_path / "out")
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataError, match="x.jsonl.*line 1.*nested too deeply"):
        read_vqa_records(jsonl)


def test_deeply_nested_pickle_field(tmp_path):
    rows = pathvqa_rows()
    rows["train"][0]["deep"] = 0x5EED5EED
    src = build_pathvqa(tmp_path / "src", rows=rows)
    path = src / "pvqa" / "qas" / "train" / "train_qa.pkl"
    data = pickle.dumps(rows["train"], protocol=2)
    placeholder = b"J" + struct.pack("<i", 0x5EED5EED)
    assert data.count(placeholder) == 1  # the value of "deep": replaced by a list nested 100,000 deep
    depth = 100_000
    path.write_bytes(data.replace(placeholder, b"]" * depth + b"a" * (depth - 1)))
    with pytest.raises(DataError, match="train_qa.pkl.*#1.*nested too deeply"):
        prepare_dataset("pathvqa", src, tmp_path / "out")
    summary = prepare_dataset("pathvqa", src, tmp_path / "out", skip_bad=True)
    assert summary["n_skipped"] == 1


def test_non_utf8_jsonl_is_an_error_naming_file_and_line(tmp_path):
    src = build_slake(tmp_path / "src")
    out = tmp_path / "out"
    prepare_dataset("slake", src, out)
    lines = (out / "train.jsonl").read_bytes().splitlines()
    bad = lines[1].replace(b'"question": "', b'"question": "\xff', 1)
    assert bad != lines[1]
    (out / "train.jsonl").write_bytes(b"\n".join([lines[0], bad, *lines[2:]]))
    with pytest.raises(DataError, match=r"train.jsonl.*line 2.*not UTF-8"):
        load_split(out, "train")
    report = check_dataset(out, decode_images=False)
    assert not report.ok and any("line 2" in p.message and "UTF-8" in p.message for p in report.invalid)


def test_nan_answer_in_jsonl_is_refused(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"qid": "1", "image": "a.png", "question": "q?", "answer": NaN, "split": "train"}\n')
    with pytest.raises(DataError, match="answer"):
        read_vqa_records(path)


def test_symlinks_inside_are_resolved_and_outside_refused(tmp_path):
    src = build_slake(tmp_path / "src")
    link = src / "imgs" / "xmlab1" / "source.jpg"
    real = (src / "imgs" / "xmlab1" / "real.jpg")
    link.rename(real)
    os.symlink("real.jpg", link)  # a relative link inside the dataset folder
    out = tmp_path / "out"
    prepare_dataset("slake", src, out)
    got = out / "images" / "xmlab1" / "source.jpg"
    assert got.is_file() and not got.is_symlink() and got.read_bytes() == real.read_bytes()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(real.read_bytes())
    link.unlink()
    os.symlink(secret, link)
    with pytest.raises(DataError, match="outside the dataset"):
        prepare_dataset("slake", src, tmp_path / "out2")


def _mutate(value, rng: random.Random):
    choices = [
        lambda: "".join(chr(rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0xd800, 0xe000),
                                        rng.randrange(0x80, 0x3000)])) for _ in range(rng.randrange(0, 8))),
        lambda: float(rng.choice(["nan", "inf", "-inf", "1e308"])),
        lambda: rng.choice([None, True, 0, -1, [], {}, [[[]]]]),
        lambda: "x/" * rng.randrange(1, 200),
        lambda: "../" * rng.randrange(1, 4) + "etc/passwd",
        lambda: "a" * rng.randrange(250, 5000),
    ]
    return rng.choice(choices)()


def test_fuzzed_rows_never_give_a_traceback_or_an_invalid_record(tmp_path):
    rng = random.Random(14)
    outcomes = {"error": 0, "written": 0}
    for n in range(40):  # bounded: about a second each at most
        rows = slake_rows()
        row = rng.choice(rows["train"])
        for key in rng.sample(sorted(row), rng.randrange(1, 3)):
            row[key] = _mutate(row[key], rng)
        src = ascii_json(build_slake(tmp_path / f"src{n}"), rows)
        out = tmp_path / f"out{n}"
        skip = bool(n % 2)
        try:
            summary = prepare_dataset("slake", src, out, skip_bad=skip)
        except DataError as e:
            assert "train.json" in str(e) and "\n" not in str(e)
            assert_untouched_or_complete(out)
            outcomes["error"] += 1
            continue
        outcomes["written"] += 1
        for split in ("train", "val", "test"):
            for r in load_split(out, split):
                r.answer.encode("utf-8")
                assert r.answer.strip() and r.answer.lower() not in ("nan", "inf", "-inf")
                assert (out / r.image).is_file()
                json.dumps(r.to_json(), ensure_ascii=False).encode("utf-8")
                assert not any(isinstance(v, float) and not math.isfinite(v) for v in r.extra.values())
        assert (out / "prepare.json").is_file() and summary["n_skipped"] <= 1
    assert outcomes["error"] >= 5 and outcomes["written"] >= 5, outcomes
