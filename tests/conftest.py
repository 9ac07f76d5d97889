import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import transformers  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that pins torch's thread count (for exact comparisons) must not change the numerics of the
    tests after it: float sums can differ in the last bits between 1 and 2 threads."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """Make folders for a module's shared fixtures, and delete them when the module's tests are done.

    A module that had a failing test keeps its folders for inspection, as pytest keeps a failing test's
    tmp_path. Without this the checkpoints of every module stay on disk until the session ends.
    """
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def make(name: str) -> Path:
        folder = tmp_path_factory.mktemp(name)
        made.append(folder)
        return folder

    yield make
    if request.session.testsfailed == failed_before:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
