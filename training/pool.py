"""The 47-class pool protocol, for machines without EMNIST's train images (see ../shared/data/emnist/SOURCES.md).

Whole image files of byclass / bymerge / balanced (whichever are present, train or test) are pooled, labels folded
into the 47 balanced classes, exact duplicates (by image bytes) dropped, then split per class with a seeded RNG:
400 test images per class, a validation share of the rest, and training on what is left.
Derived arrays are cached under the user cache folder keyed by the input files' sha256, never next to the data.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import DataError, Source, load_split, member_name
from .files import replacing

POOL_SPLITS = ("byclass", "bymerge", "balanced")
TEST_PER_CLASS = 400
VAL_FRACTION = 0.05
PROTOCOL_VERSION = 1  # bump when the recipe changes: it is part of the cache key and the split hash


def cache_dir() -> Path:
    base = os.environ.get("EMNIST_EDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "emnist-edge"
    )
    return Path(base)


@dataclass
class Pool:
    images: np.ndarray  # (N, 28, 28) uint8 upright, de-duplicated
    labels: np.ndarray  # (N,) int64 in 0..46
    chars: list[str]  # the 47 balanced classes
    train: np.ndarray  # indices into images
    val: np.ndarray
    test: np.ndarray
    split_hash: str  # sha256 over the inputs' hashes, the seed and the three index lists
    inputs: dict  # member name -> sha256
    duplicates_dropped: int
    conflicts_dropped: int

    def subset(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = {"train": self.train, "val": self.val, "test": self.test}[name]
        return self.images[idx], self.labels[idx]

    def summary(self) -> dict:
        return {
            "protocol": "pool",
            "images": int(len(self.images)),
            "classes": len(self.chars),
            "train": int(len(self.train)),
            "val": int(len(self.val)),
            "test": int(len(self.test)),
            "test_per_class": int(len(self.test) // max(1, len(self.chars))),
            "duplicates_dropped": self.duplicates_dropped,
            "conflicting_labels_dropped": self.conflicts_dropped,
            "overlap": overlap_counts(self),
            "split_hash": self.split_hash,
            "inputs": self.inputs,
        }


def fold_map(from_chars: list[str], to_chars: list[str]) -> np.ndarray:
    """Label table from one mapping into the 47 classes: c i j k l m o p s u v w x y z merge into capitals."""
    index = {c: i for i, c in enumerate(to_chars)}
    try:
        return np.array([index[c] if c in index else index[c.upper()] for c in from_chars], np.int64)
    except KeyError as e:
        raise DataError(f"class {e.args[0]!r} has no place in the 47 balanced classes") from None


def image_digests(images: np.ndarray) -> np.ndarray:
    """One 16-byte digest per image: duplicates are judged by image bytes."""
    flat = images.reshape(len(images), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat], dtype="S16")


def _present_inputs(source: Source) -> list[tuple[str, str]]:
    found = []
    for split in POOL_SPLITS:
        for subset in ("train", "test"):
            if source.has(member_name(split, subset, "images")) and source.has(member_name(split, subset, "labels")):
                found.append((split, subset))
    if not found:
        raise DataError(f"the pool protocol needs byclass, bymerge or balanced image files; none in {source.path}")
    return found


def build_pool(source: Source, seed: int = 0, use_cache: bool = True, progress=print,
               test_per_class: int = TEST_PER_CLASS) -> Pool:
    inputs = _present_inputs(source)
    hashes = {}
    for split, subset in inputs:
        for kind in ("images", "labels"):
            name = member_name(split, subset, kind)
            hashes[name] = source.sha256(name)
    recipe = [PROTOCOL_VERSION, seed, test_per_class, VAL_FRACTION, sorted(hashes.items())]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:20]
    cached = cache_dir() / f"pool-{key}.npz"
    if use_cache and cached.is_file():
        try:
            return _load_cached(cached, hashes)
        except Exception:  # a damaged cache is rebuilt, never trusted
            progress(f"pool cache {cached} unreadable; rebuilding")

    balanced_chars = source.mapping("bymerge") if source.has("emnist-bymerge-mapping.txt") else source.mapping("balanced")
    images, labels = [], []
    for split, subset in inputs:
        progress(f"reading {split}/{subset}")
        part = load_split(source, split, subset)
        images.append(part.images)
        labels.append(fold_map(part.chars, balanced_chars)[part.labels])
    images = np.concatenate(images)
    labels = np.concatenate(labels)

    progress(f"de-duplicating {len(images):,} images by bytes")
    digests = image_digests(images)
    uniq, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    # An image that carries two different labels cannot be trusted in any split: drop every copy of it.
    lab_min = np.full(len(uniq), 1 << 30)
    lab_max = np.full(len(uniq), -1)
    np.minimum.at(lab_min, inverse, labels)
    np.maximum.at(lab_max, inverse, labels)
    keep = np.sort(first[lab_min == lab_max])  # first copy of each image, in input order
    conflicts = int(np.sum(lab_min != lab_max))
    duplicates = len(images) - len(uniq)
    images, labels, digests = images[keep], labels[keep], digests[keep]

    train, val, test = split_indices(labels, len(balanced_chars), seed, test_per_class)
    split_hash = hashlib.sha256(
        json.dumps([PROTOCOL_VERSION, seed, sorted(hashes.items())]).encode()  # the indices below fix the rest
        + b"".join(np.sort(a).astype("<i8").tobytes() for a in (train, val, test))
        + digests.tobytes()
    ).hexdigest()
    pool = Pool(images, labels, balanced_chars, train, val, test, split_hash, hashes, duplicates, conflicts)
    if use_cache:
        _save_cached(cached, pool)
    return pool


def split_indices(labels: np.ndarray, n_classes: int, seed: int, test_per_class: int = TEST_PER_CLASS):
    """Per class: shuffle with the seed, take test_per_class for test, VAL_FRACTION of the rest for validation."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in range(n_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) <= test_per_class:
            raise DataError(f"class {c} has {len(idx)} images, too few for {test_per_class} test images")
        test.append(idx[:test_per_class])
        rest = idx[test_per_class:]
        n_val = max(1, int(round(len(rest) * VAL_FRACTION)))
        val.append(rest[:n_val])
        train.append(rest[n_val:])
    return tuple(np.sort(np.concatenate(parts)) for parts in (train, val, test))


def overlap_counts(pool: Pool) -> dict:
    """Images (by bytes) found in two of train/validation/test: zero by construction, checked here all the same."""
    sets = {name: set(image_digests(pool.images[getattr(pool, name)]).tolist()) for name in ("train", "val", "test")}
    return {
        "train&val": len(sets["train"] & sets["val"]),
        "train&test": len(sets["train"] & sets["test"]),
        "val&test": len(sets["val"] & sets["test"]),
    }


def _save_cached(path: Path, pool: Pool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(
        {"chars": pool.chars, "split_hash": pool.split_hash, "inputs": pool.inputs,
         "duplicates": pool.duplicates_dropped, "conflicts": pool.conflicts_dropped}
    )
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=pool.images, labels=pool.labels, train=pool.train, val=pool.val, test=pool.test,
                 meta=np.frombuffer(meta.encode(), np.uint8))


def _load_cached(path: Path, hashes: dict) -> Pool:
    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta["inputs"] != hashes:
            raise ValueError("cache key collision")
        return Pool(z["images"], z["labels"], meta["chars"], z["train"], z["val"], z["test"], meta["split_hash"],
                    meta["inputs"], meta["duplicates"], meta["conflicts"])
