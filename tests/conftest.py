import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rec_transfer.data.domain import PreprocessConfig, preprocess  # noqa: E402
from rec_transfer.data.synthetic import synthetic_domain  # noqa: E402


@pytest.fixture(scope="session")
def tiny_domain():
    return preprocess(synthetic_domain("books", num_users=60, num_items=40, mean_length=8), PreprocessConfig())


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """One fit of the shrunk quickstart (``cli_helpers.tiny_quickstart``) through the command line, for reading only."""
    from cli_helpers import fit_run

    return fit_run(tmp_path_factory.mktemp("quickstart"))
