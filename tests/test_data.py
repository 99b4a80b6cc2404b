"""Data layer: IDX parsing, zip == directory, orientation, letters offset, integrity, pool protocol."""
import subprocess
import sys

import numpy as np
import pytest

from emnist_edge.training import data, pool
from emnist_edge.training.data import DataError, Source, find_source, load_split, parse_idx

from fixtures import BYMERGE, checksums, glyph, idx_bytes, make_files, write_dir, write_zip


@pytest.fixture
def files():
    return make_files()


@pytest.fixture
def src_dir(tmp_path, files):
    return Source(write_dir(tmp_path / "gzip", files), checksums=checksums(files))


def test_parse_idx_roundtrip_and_errors():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(a)), a)
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="payload"):
        parse_idx(idx_bytes(a)[:-1])


def test_zip_and_directory_read_the_same(tmp_path, files):
    d = Source(write_dir(tmp_path / "dir", files), checksums=checksums(files))
    z = Source(write_zip(tmp_path / "gzip.zip", files), checksums=checksums(files))
    a, b = load_split(d, "byclass"), load_split(z, "byclass")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels) and a.chars == b.chars


def test_images_come_back_upright(src_dir):
    s = load_split(src_dir, "byclass")
    assert np.array_equal(s.images[0], glyph(0, 0))  # stored transposed, returned as drawn
    assert s.images[0][2, 5] == 255 and s.images[0][5, 2] == 0


def test_letters_labels_are_zero_based(src_dir):
    s = load_split(src_dir, "letters")
    assert s.labels.min() == 0 and s.labels.max() == 25
    assert s.chars[0] == "A" and s.chars[s.labels[3]] == "D"


def test_mapping_turns_into_characters(src_dir):
    assert src_dir.mapping("bymerge") == BYMERGE
    assert load_split(src_dir, "byclass").chars[36] == "a"


def test_sha256_mismatch_names_the_file(tmp_path, files):
    sums = checksums(files)
    sums["emnist-byclass-test-images-idx3-ubyte.gz"] = "0" * 64
    s = Source(write_dir(tmp_path / "g", files), checksums=sums)
    with pytest.raises(DataError, match="emnist-byclass-test-images-idx3-ubyte.gz.*sha256"):
        load_split(s, "byclass")
    assert s.verify("emnist-byclass-test-images-idx3-ubyte.gz") == "MISMATCH"
    assert s.verify("emnist-byclass-test-labels-idx1-ubyte.gz") == "ok"


def test_nist_list_is_complete():
    assert len(data.NIST_SHA256) == 24
    assert data.NIST_SHA256["emnist-mnist-test-images-idx3-ubyte.gz"].startswith("b25640fa")


def test_truncated_gzip_is_a_clear_error(tmp_path, files):
    name = "emnist-byclass-test-images-idx3-ubyte.gz"
    files = dict(files, **{name: files[name][: len(files[name]) // 2]})
    s = Source(write_dir(tmp_path / "g", files), checksums={})
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        load_split(s, "byclass")


def test_corrupt_zip_is_a_clear_error(tmp_path):
    bad = tmp_path / "gzip.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        Source(bad)


def test_missing_data_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("EMNIST_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(data, "ZIP_CACHE", tmp_path / ".cache/emnist/emnist.zip")
    import emnist

    def offline():
        raise ConnectionError("no network")

    monkeypatch.setattr(emnist, "ensure_cached_data", offline)
    with pytest.raises(DataError, match="--data PATH or set EMNIST_DATA.*emnist.zip"):
        find_source(None)


def test_unknown_split(src_dir):
    with pytest.raises(DataError, match="unknown split"):
        load_split(src_dir, "bogus")


def test_pool_deduplicates_and_never_overlaps(src_dir):
    p = pool.build_pool(src_dir, seed=0, use_cache=False, progress=lambda m: None, test_per_class=5)
    assert p.duplicates_dropped == 47 * 3
    assert len(p.images) == 62 * 12 + 47 * 12 - 47 * 3
    assert len(p.chars) == 47 and len(p.test) == 47 * 5
    digests = pool.image_digests(p.images)
    assert len(set(digests.tolist())) == len(p.images)
    assert pool.overlap_counts(p) == {"train&val": 0, "train&test": 0, "val&test": 0}
    assert len(np.intersect1d(p.train, p.test)) == 0 and len(np.intersect1d(p.val, p.test)) == 0
    # lower-case byclass letters fold into their capitals
    assert np.sum(p.labels == p.chars.index("C")) == 12 + 12 + 9


def test_pool_is_deterministic_and_cached(src_dir):
    a = pool.build_pool(src_dir, seed=3, progress=lambda m: None, test_per_class=5)
    b = pool.build_pool(src_dir, seed=3, progress=lambda m: None, test_per_class=5)  # from the cache
    c = pool.build_pool(src_dir, seed=4, use_cache=False, progress=lambda m: None, test_per_class=5)
    assert a.split_hash == b.split_hash and np.array_equal(a.test, b.test)
    assert c.split_hash != a.split_hash


def test_conflicting_labels_are_dropped(tmp_path, files):
    from fixtures import write_split

    imgs = np.array([glyph(10, v) for v in range(6)] + [glyph(10, 500 + v) for v in range(6)])
    files = dict(files)
    # bymerge claims six of byclass's "A" images (label 10) are "B" (label 11): every copy of those must go
    write_split(files, "bymerge", "test", imgs, np.array([11] * 6 + [10] * 6))
    s = Source(write_dir(tmp_path / "g", files), checksums={})
    p = pool.build_pool(s, use_cache=False, progress=lambda m: None, test_per_class=1)
    assert p.conflicts_dropped == 6
    assert np.sum(p.labels == p.chars.index("A")) == 6 + 6


def test_data_command_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "emnist_edge.training.data_cli", "--data", str(tmp_path / "nope"), "list"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.data
def test_real_files_are_nist_exact(real_data):
    rows = {(r["split"], r["subset"]): r for r in data.inventory(Source(real_data))}
    for split in ("byclass", "bymerge", "mnist"):
        assert rows[(split, "test")]["images"] == "ok" and rows[(split, "test")]["labels"] == "ok"


@pytest.mark.data
@pytest.mark.slow
def test_real_pool_protocol(real_data):
    p = pool.build_pool(Source(real_data), seed=0, progress=lambda m: None)
    s = p.summary()
    assert (s["images"], s["classes"], s["test"]) == (216_168, 47, 18_800)
    assert s["overlap"] == {"train&val": 0, "train&test": 0, "val&test": 0}
    assert np.all(np.bincount(p.labels[p.test]) == 400)
