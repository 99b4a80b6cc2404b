import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
REPO = Path(__file__).resolve().parent.parent


def real_data_dir():
    """The real EMNIST files: $EMNIST_DATA, else ../shared/data/emnist/gzip beside the checkout."""
    for cand in (os.environ.get("EMNIST_DATA"), REPO.parent / "shared/data/emnist/gzip"):
        if cand and Path(cand).exists():
            return Path(cand)
    return None


def realworld_dir():
    for cand in (os.environ.get("EMNIST_REALWORLD"), REPO.parent / "shared/data/realworld-dev"):
        if cand and (Path(cand) / "manifest.csv").exists():
            return Path(cand)
    return None


@pytest.fixture
def real_data():
    path = real_data_dir()
    if path is None:
        pytest.skip("real EMNIST files not present (set EMNIST_DATA)")
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Derived-array caches go to a per-session temp folder, never the user's."""
    monkeypatch.setenv("EMNIST_EDGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
