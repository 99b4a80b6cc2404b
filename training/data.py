"""EMNIST reader: NIST's gzip IDX files from a zip or a directory, verified, upright, with characters.

numpy + standard library only: the edge imports this module (lazily) for `emnist-edge eval`.

Orientation: NIST stores every image transposed. Everything this module returns is upright
(`img[row, col]`, as a person reads it), white ink (255) on black (0). This is the one place that transposes.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")
SUBSETS = ("train", "test")
ZIP_CACHE = Path("~/.cache/emnist/emnist.zip")  # where the `emnist` package keeps NIST's gzip.zip


def read_sha256sums(path: str | os.PathLike) -> dict[str, str]:
    """`sha256sum` format: 'digest  name' per line -> {name: digest}."""
    return {name: digest for digest, name in (line.split() for line in Path(path).read_text().splitlines() if line.strip())}


NIST_SHA256 = read_sha256sums(Path(__file__).with_name("NIST_SHA256SUMS.txt"))
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(Exception):
    """Missing, corrupt or unexpected data: the message is one line meant for the user."""


def member_name(split: str, subset: str, kind: str) -> str:
    dim = 3 if kind == "images" else 1
    return f"emnist-{split}-{subset}-{kind}-idx{dim}-ubyte.gz"


def mapping_name(split: str) -> str:
    return f"emnist-{split}-mapping.txt"


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes (already decompressed) into an array of the shape the header declares."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{name}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: IDX header is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{name}: IDX payload is {len(raw) - header} bytes, header promises {expected - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


class Source:
    """NIST's EMNIST files in a zip (`gzip.zip`, members under `gzip/`) or in a directory: one code path."""

    def __init__(self, path: str | os.PathLike, checksums: dict[str, str] | None = None):
        self.path = Path(path).expanduser()
        if checksums is None:  # $EMNIST_SHA256SUMS names another list (own data, test fixtures)
            alt = os.environ.get("EMNIST_SHA256SUMS")
            checksums = read_sha256sums(alt) if alt else NIST_SHA256
        self.checksums = checksums  # name -> sha256 each member must have
        if self.path.is_dir():
            self._zip = None
            self._members = {p.name: p for p in self.path.iterdir() if p.is_file()}
        elif self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"{self.path}: not a readable zip archive ({e})") from None
            self._members = {Path(n).name: n for n in self._zip.namelist() if not n.endswith("/")}
        else:
            raise DataError(f"EMNIST data not found at {self.path}")

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r})"

    def has(self, name: str) -> bool:
        return name in self._members

    def read(self, name: str) -> bytes:
        if name not in self._members:
            raise DataError(f"{name} is not in {self.path}")
        try:
            if self._zip is None:
                return self._members[name].read_bytes()
            return self._zip.read(self._members[name])
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{name} in {self.path} cannot be read ({e})") from None

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.read(name)).hexdigest()

    def verify(self, name: str) -> str:
        """'ok' when the file equals NIST's published member, 'MISMATCH', or 'unlisted'."""
        want = self.checksums.get(name)
        if want is None:
            return "unlisted"
        return "ok" if self.sha256(name) == want else "MISMATCH"

    def read_idx(self, name: str, verify: bool = True) -> np.ndarray:
        blob = self.read(name)
        if verify and name in self.checksums and hashlib.sha256(blob).hexdigest() != self.checksums[name]:
            raise DataError(f"{name} in {self.path} does not match NIST's sha256 (corrupt or altered file)")
        try:
            raw = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{name} in {self.path}: truncated or corrupt gzip ({e})") from None
        return parse_idx(raw, name)

    def mapping(self, split: str) -> list[str]:
        """Class characters in label order, from NIST's mapping file (`label codepoint [codepoint]`, CRLF)."""
        name = mapping_name(split)
        rows = [line.split() for line in self.read(name).decode("ascii").splitlines() if line.strip()]
        labels = [int(r[0]) for r in rows]
        chars = [chr(int(r[1])) for r in rows]
        # letters labels run 1..26 in NIST's files; everything we return is 0-based.
        if labels != list(range(labels[0], labels[0] + len(labels))):
            raise DataError(f"{name}: labels are not consecutive")
        return chars


def find_source(data: str | os.PathLike | None = None, download: bool = True) -> Source:
    """Locate EMNIST: `data` / $EMNIST_DATA, then the `emnist` package's cached gzip.zip, then its download."""
    data = data or os.environ.get("EMNIST_DATA")
    if data:
        return Source(data)
    cached = ZIP_CACHE.expanduser()
    if cached.is_file():
        return Source(cached)
    if download:
        try:
            import emnist  # only for its cache location and download

            return Source(emnist.ensure_cached_data())
        except ImportError:
            pass
        except Exception:  # offline, blocked, or a half download: the message below says what to do
            pass
    raise DataError(
        f"no EMNIST data: pass --data PATH or set EMNIST_DATA to NIST's gzip.zip or a folder of its .gz files, "
        f"or put gzip.zip at {cached}"
    )


@dataclass
class Split:
    images: np.ndarray  # (N, 28, 28) uint8, upright, white ink on black
    labels: np.ndarray  # (N,) int64, 0-based
    chars: list[str]  # chars[label] is the class's character


def load_split(source: Source, split: str, subset: str = "test", verify: bool = True) -> Split:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r}; choose train or test")
    images = source.read_idx(member_name(split, subset, "images"), verify)
    labels = source.read_idx(member_name(split, subset, "labels"), verify).astype(np.int64)
    chars = source.mapping(split)
    if split == "letters":
        labels = labels - 1
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataError(f"{split}/{subset}: {images.shape} images do not fit {labels.shape} labels")
    if labels.min() < 0 or labels.max() >= len(chars):
        raise DataError(f"{split}/{subset}: labels outside the {len(chars)} mapped classes")
    return Split(np.ascontiguousarray(images.transpose(0, 2, 1)), labels, chars)


def inventory(source: Source) -> list[dict]:
    """Every split/subset: which files are present, how many samples, and whether they are NIST-exact."""
    rows = []
    for split in SPLITS:
        for subset in SUBSETS:
            row = {"split": split, "subset": subset}
            for kind in ("images", "labels"):
                name = member_name(split, subset, kind)
                if not source.has(name):
                    row[kind] = "missing"
                    continue
                status = source.verify(name)
                if status == "ok" or kind == "labels":
                    try:
                        count = len(source.read_idx(name, verify=False)) if kind == "labels" else None
                    except DataError:
                        status, count = "corrupt", None
                    row[f"{kind}_count"] = count
                row[kind] = status
            row["mapping"] = "present" if source.has(mapping_name(split)) else "missing"
            rows.append(row)
    return rows
