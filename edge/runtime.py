"""Run a .tflite model with the TFLite runtime only: ai-edge-litert (LiteRT) first, then tflite-runtime.

Everything the model needs is read from the model file: class characters and input spec from its metadata entry
`emnist_edge` (written by emnist-convert), and each tensor's quantization (scale, zero point) from the interpreter.
Never imports TensorFlow (tests/test_edge.py proves it in venvs without it).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METADATA_NAME = "emnist_edge"
RUNTIMES = ("ai-edge-litert", "tflite-runtime")


class EdgeError(Exception):
    """A problem the user can fix (missing runtime, bad model, bad image): one line, no traceback."""

    exit_code = 2


class ModelError(EdgeError):
    exit_code = 3


def load_interpreter_class(runtime: str | None = None):
    """Return (Interpreter class, runtime name, version). `runtime` forces one of RUNTIMES."""
    wanted = [runtime] if runtime else list(RUNTIMES)
    for name in wanted:
        try:
            if name == "ai-edge-litert":
                from ai_edge_litert.interpreter import Interpreter
                from importlib.metadata import version

                return Interpreter, name, version("ai-edge-litert")
            if name == "tflite-runtime":
                from tflite_runtime.interpreter import Interpreter
                import tflite_runtime

                return Interpreter, name, tflite_runtime.__version__
            raise EdgeError(f"unknown runtime {name!r}; choose {' or '.join(RUNTIMES)}")
        except ImportError:
            continue
    if runtime:
        extra = "edge" if runtime == "ai-edge-litert" else "edge-tflite"
        raise EdgeError(f"runtime {runtime} is not installed: pip install 'emnist-edge[{extra}]'")
    raise EdgeError("no TFLite runtime installed: pip install 'emnist-edge[edge]' (ai-edge-litert) "
                    "or 'emnist-edge[edge-tflite]' (tflite-runtime, numpy<2)")


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence native code writing to file descriptor 2 for a block (Python exceptions still carry the errors)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            sys.stderr.flush()
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --- reading the model's own metadata -------------------------------------------------------------------------
# A .tflite file is a FlatBuffer (schema.fbs: Model.metadata = [Metadata{name, buffer}], Model.buffers =
# [Buffer{data}]). tflite-runtime ships no schema bindings, so this reads the few fields needed directly.

def _table_field(buf: bytes, table: int, field: int) -> int | None:
    """Absolute position of a table's field (or None when absent)."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vt_size = struct.unpack_from("<H", buf, vtable)[0]
    slot = 4 + 2 * field
    if slot >= vt_size:
        return None
    off = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + off if off else None


def _deref(buf: bytes, pos: int) -> int:
    return pos + struct.unpack_from("<I", buf, pos)[0]


def _vector(buf: bytes, pos: int) -> tuple[int, int]:
    start = _deref(buf, pos)
    return start + 4, struct.unpack_from("<I", buf, start)[0]


def read_metadata(model: bytes) -> dict[str, bytes]:
    """All metadata entries of a .tflite model: name -> bytes."""
    try:
        if len(model) < 8 or model[4:8] != b"TFL3":
            raise ValueError("no TFL3 identifier")
        root = _deref(model, 0)
        meta_pos, buffers_pos = _table_field(model, root, 6), _table_field(model, root, 4)
        if meta_pos is None or buffers_pos is None:
            return {}
        buffers, n_buffers = _vector(model, buffers_pos)
        entries, n = _vector(model, meta_pos)
        out = {}
        for i in range(n):
            entry = _deref(model, entries + 4 * i)
            name_pos, index_pos = _table_field(model, entry, 0), _table_field(model, entry, 1)
            if name_pos is None or index_pos is None:
                continue
            start, length = _vector(model, name_pos)
            name = model[start:start + length].decode("utf-8")
            index = struct.unpack_from("<I", model, index_pos)[0]
            if index >= n_buffers:
                raise ValueError("metadata buffer index out of range")
            buffer = _deref(model, buffers + 4 * index)
            data_pos = _table_field(model, buffer, 0)
            if data_pos is None:
                continue
            start, length = _vector(model, data_pos)
            out[name] = bytes(model[start:start + length])
        return out
    except (struct.error, ValueError, UnicodeDecodeError, IndexError) as e:
        raise ModelError(f"not a valid .tflite model ({e})") from None


# --- the model ----------------------------------------------------------------------------------------------

@dataclass
class QuantParams:
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


class EdgeModel:
    """A .tflite classifier: predict_proba(images uint8 (N,28,28)) -> float probabilities (N, classes)."""

    def __init__(self, path: str | os.PathLike, runtime: str | None = None, threads: int | None = None):
        self.path = Path(path)
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"model not found: {self.path}") from None
        except OSError as e:
            raise ModelError(f"cannot read model {self.path}: {e.strerror}") from None
        self.sha256 = hashlib.sha256(blob).hexdigest()
        self.size = len(blob)
        entries = read_metadata(blob)
        if METADATA_NAME not in entries:
            raise ModelError(f"{self.path} has no '{METADATA_NAME}' metadata (class characters, input spec); "
                             f"convert it with emnist-convert")
        try:
            self.meta = json.loads(entries[METADATA_NAME])
            self.chars: list[str] = list(self.meta["classes"])
        except (ValueError, KeyError, TypeError):
            raise ModelError(f"{self.path}: '{METADATA_NAME}' metadata is unreadable") from None
        Interpreter, self.runtime, self.runtime_version = load_interpreter_class(runtime)
        self.threads = threads
        try:
            with quiet_native_stderr():  # the runtime's C++ INFO line ("Created ... XNNPACK delegate") is noise here
                self.interpreter = Interpreter(model_content=blob, num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: the runtime cannot load it ({str(e).splitlines()[0]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        if list(self.input["shape"][1:]) != [28, 28, 1]:
            raise ModelError(f"{self.path}: input shape {list(self.input['shape'])} is not [N, 28, 28, 1]")
        if self.output["shape"][-1] != len(self.chars):
            raise ModelError(f"{self.path}: {self.output['shape'][-1]} outputs but {len(self.chars)} class characters")
        self.in_q = QuantParams(*self.input["quantization"])
        self.out_q = QuantParams(*self.output["quantization"])
        self._batch = int(self.input["shape"][0])

    @property
    def mode(self) -> str:
        return self.meta.get("mode", "unknown")

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 pixels 0..255 (N,28,28) -> the input tensor's dtype, using its own scale and zero point."""
        x = images.astype(np.float32)[..., None]
        dtype = self.input["dtype"]
        if self.in_q.quantized and np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / self.in_q.scale + self.in_q.zero_point), info.min, info.max)
        return x.astype(dtype)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        if self.out_q.quantized and np.issubdtype(y.dtype, np.integer):
            return (y.astype(np.float32) - self.out_q.zero_point) * self.out_q.scale
        return y.astype(np.float32)

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], [n, 28, 28, 1])
            self.interpreter.allocate_tensors()
            self._batch = n

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """Run one already-quantized batch (the input tensor is resized to its size)."""
        self._resize(len(x))
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def predict_proba(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        out = [self.dequantize_output(self.invoke(self.quantize_input(images[i:i + batch])))
               for i in range(0, len(images), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(self.chars)), np.float32)

    def info(self) -> dict:
        def tensor(d, q):
            return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                    "scale": q.scale, "zero_point": q.zero_point}

        return {
            "path": str(self.path), "size_bytes": self.size, "sha256": self.sha256, "mode": self.mode,
            "classes": "".join(self.chars), "num_classes": len(self.chars), "input_spec": self.meta.get("input"),
            "input": tensor(self.input, self.in_q), "output": tensor(self.output, self.out_q),
            "trained_on": self.meta.get("dataset"), "source_keras_sha256": self.meta.get("keras_sha256"),
            "runtime": self.runtime, "runtime_version": self.runtime_version, "threads": self.threads,
        }
