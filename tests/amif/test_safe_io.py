"""amif.safe_io: atomic writes keep the old file on failure; weight loads never unpickle code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from amif.errors import CheckpointError
from amif.safe_io import (
    TEMP_MARK,
    atomic_path,
    atomic_write_text,
    load_safetensors,
    load_torch_file,
    remove_stale_temps,
)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # the usual permissions, not mkstemp's 0600


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / f".last.ckpt{TEMP_MARK}abc").write_bytes(b"x")
    (tmp_path / "sub" / f".model{TEMP_MARK}dir").mkdir()
    (tmp_path / "keep.txt").write_text("k")
    assert len(remove_stale_temps(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.txt", "sub"]


def test_weight_loads_never_run_a_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "last.ckpt"
    torch.save({"x": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="last.ckpt: refused"):
        load_torch_file(evil)
    os.link(evil, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_safetensors(tmp_path / "model.safetensors")
    assert not marker.exists()
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_torch_file(tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_torch_file(tmp_path / "missing.ckpt")
