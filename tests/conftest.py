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


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory):
    """A tiny NIST-layout folder plus its own checksum list; env for subprocesses that read it."""
    from fixtures import make_files, write_dir, write_sums

    root = tmp_path_factory.mktemp("emnist")
    files = make_files(per_class=14)
    data = write_dir(root / "gzip", files)
    sums = write_sums(root / "SHA256SUMS", files)
    return {"dir": data, "sums": sums, "env": {"EMNIST_DATA": str(data), "EMNIST_SHA256SUMS": str(sums)}}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, fixture_data):
    """A tiny model trained one epoch on the fixture pool (TensorFlow), with its model card."""
    pytest.importorskip("tensorflow")
    from emnist_edge.training.train import TrainConfig, train

    from fixtures import environment

    out = tmp_path_factory.mktemp("tiny")
    with environment(dict(fixture_data["env"], EMNIST_EDGE_CACHE=str(out / "cache"))):
        card = train(TrainConfig(arch="tiny", epochs=1, batch_size=64, out=str(out), test_per_class=4,
                                 patience=5), progress=lambda m: None)
    return {"dir": out, "keras": out / "tiny.keras", "card": card}
