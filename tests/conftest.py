import os

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
