"""Tiny NIST-format EMNIST files made on the fly: IDX, gzip, transposed images, CRLF mapping files."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import string
import zipfile
from pathlib import Path

import numpy as np

BYCLASS = list(string.digits + string.ascii_uppercase + string.ascii_lowercase)
MERGED = set("cijklmopsuvwxyz")
BYMERGE = [c for c in BYCLASS if c not in MERGED]  # 47 classes, EMNIST's order


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def glyph(label: int, variant: int) -> np.ndarray:
    """An upright 28x28 image unique to (label, variant), with a mark in the top-left (orientation check)."""
    img = np.zeros((28, 28), np.uint8)
    img[2:4, 2:10] = 255  # horizontal bar at the top-left when upright
    img[10 + label % 14, 4:24] = 100 + label % 100
    img[20, variant % 28] = 200
    img[24, (variant // 28) % 28] = 50 + label
    return img


def mapping_text(chars: list[str], start: int = 0) -> bytes:
    return "".join(f"{i + start} {ord(c)}\r\n" for i, c in enumerate(chars)).encode()


def write_split(files: dict, split: str, subset: str, images: np.ndarray, labels: np.ndarray) -> None:
    # NIST stores images transposed.
    files[f"emnist-{split}-{subset}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images.transpose(0, 2, 1)), mtime=0)
    files[f"emnist-{split}-{subset}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels), mtime=0)


def make_files(per_class: int = 12, shared: int = 3) -> dict[str, bytes]:
    """byclass test + bymerge test (sharing `shared` images per merged class), letters test, mappings."""
    files: dict[str, bytes] = {}
    imgs, labs = [], []
    for label, c in enumerate(BYCLASS):
        for v in range(per_class):
            imgs.append(glyph(label, v))
            labs.append(label)
    write_split(files, "byclass", "test", np.array(imgs), np.array(labs))
    imgs, labs = [], []
    for label, c in enumerate(BYMERGE):
        src = BYCLASS.index(c)
        for v in range(per_class):
            # the first `shared` variants are byte-identical to byclass images: the pool must drop them
            imgs.append(glyph(src, v) if v < shared else glyph(src, 1000 + v))
            labs.append(label)
    write_split(files, "bymerge", "test", np.array(imgs), np.array(labs))
    letters = np.array([glyph(i, 0) for i in range(26)])
    files["emnist-letters-test-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(letters.transpose(0, 2, 1)), mtime=0)
    files["emnist-letters-test-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.arange(1, 27)), mtime=0)
    files["emnist-byclass-mapping.txt"] = mapping_text(BYCLASS)
    files["emnist-bymerge-mapping.txt"] = mapping_text(BYMERGE)
    files["emnist-balanced-mapping.txt"] = mapping_text(BYMERGE)
    files["emnist-letters-mapping.txt"] = "".join(
        f"{i + 1} {ord(c)} {ord(c.lower())}\r\n" for i, c in enumerate(string.ascii_uppercase)).encode()
    return files


def write_dir(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (path / name).write_bytes(blob)
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in files.items():
            z.writestr(f"gzip/{name}", blob)
    return path


def checksums(files: dict[str, bytes]) -> dict[str, str]:
    return {n: hashlib.sha256(b).hexdigest() for n, b in files.items() if n.endswith(".gz")}


def write_sums(path: Path, files: dict[str, bytes]) -> Path:
    path.write_text("".join(f"{d}  {n}\n" for n, d in checksums(files).items()))
    return path


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """Set environment variables for a block (session-scoped fixtures cannot use monkeypatch)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
