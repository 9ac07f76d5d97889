"""Crash-safe writes and safe reads of weight files.

Writes: every file amif writes where a kill would leave a torn file goes through :func:`atomic_path`:
the data is written to a temporary file *in the target folder* (so the final rename never crosses a
file system), flushed to disk with ``fsync``, then moved over the target with :func:`os.replace`
(atomic on POSIX and Windows) and the folder entry is synced. A kill leaves either the old file or
the new one, never a partial one; the temporary file it may leave behind carries :data:`TEMP_MARK` in
its name and :func:`remove_stale_temps` deletes it when the next run starts.

Reads: :func:`load_torch_file` always passes ``weights_only=True`` (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
cannot turn it off) and :func:`load_safetensors` never unpickles; a file that cannot be read raises a
:class:`~amif.errors.CheckpointError` naming it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amif.errors import CheckpointError

TEMP_MARK = ".amif-tmp-"  # in the name of every temporary file or folder; stale ones are deleted at start


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Persist a rename inside ``folder`` (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets the usual permissions
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_folder(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final`` (a sibling), replacing an older ``final``.

    A folder cannot be swapped in one rename when the target exists, so the old one is first renamed
    aside (a :data:`TEMP_MARK` name, deleted afterwards or by the next start-up clean-up): a kill leaves
    ``final`` either complete (old or new) or absent, never half-written.
    """
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}{TEMP_MARK}old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def temp_folder(final: Path) -> Path:
    """A new empty temporary folder next to ``final`` (to be published with :func:`replace_folder`)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}{TEMP_MARK}", dir=final.parent))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders an interrupted write left anywhere under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.rglob(f"*{TEMP_MARK}*") if TEMP_MARK in p.name)
    removed = []
    for p in stale:
        if not p.exists() and not p.is_symlink():
            continue  # inside a folder removed just before
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def load_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, no code runs.

    A missing, truncated, corrupt or unsafe file raises :class:`CheckpointError` naming it.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused to load: cannot read it as a plain weights file "
                              f"(torch.load(weights_only=True) says: {first})") from e
    except Exception as e:  # a corrupt file can raise nearly any type (torch hands .safetensors to safetensors)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read this checkpoint (truncated or corrupt?): {first}") from e


def load_safetensors(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """All tensors of a ``.safetensors`` file; a missing or corrupt file raises :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read this safetensors file (truncated or corrupt?): {e}") from e


def save_safetensors(state: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` through :func:`atomic_path`."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
