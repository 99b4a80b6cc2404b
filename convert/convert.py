"""Keras -> TFLite in four modes, int8 calibrated on EMNIST training images, metadata embedded, verified after.

Conversion path: `TFLiteConverter.from_keras_model`. With Keras 3 + TF 2.21 it exports a SavedModel internally and
freezes the weights; `from_concrete_functions` on a traced `model(x)` does not (Keras 3 variables stay READ_VARIABLE
ops, and the file computes garbage: tests/test_convert.py compares every mode with Keras). The batch dimension
stays dynamic, so the edge batches by resizing the input tensor.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..edge.runtime import METADATA_NAME, EdgeModel
from ..training.data import find_source, load_split
from ..training.files import replacing
from ..training.pool import build_pool

MODES = ("float32", "float16", "dynamic", "int8")
DEFAULT_MODES = ("float32", "int8")
DEFAULT_CALIBRATION = 1000  # chosen by `emnist-bench calibration` (accuracy vs. size, see benchmarks/results)


class ConvertError(Exception):
    pass


@dataclass
class EvalData:
    calibration_pool: tuple[np.ndarray, np.ndarray]  # training-side images: calibration is drawn from here
    verify: tuple[np.ndarray, np.ndarray]  # disjoint from every calibration image
    description: dict


def load_card(keras_path: Path) -> dict:
    card_path = keras_path.with_name(keras_path.name.removesuffix(".keras") + ".card.json")
    if not card_path.is_file():
        raise ConvertError(f"no model card {card_path.name} beside {keras_path.name} (it holds the class characters)")
    return json.loads(card_path.read_text())


def load_eval_data(card: dict, data: str | None, progress=print) -> EvalData:
    source = find_source(data)
    ds = card.get("dataset", {})
    protocol = ds.get("protocol", "pool")
    if protocol == "pool":
        pool = build_pool(source, seed=card.get("config", {}).get("seed", 0), progress=progress,
                          test_per_class=ds.get("test_per_class", 400))
        if pool.split_hash != ds.get("split_hash", pool.split_hash):
            progress("warning: the pool split differs from the one the model was trained on")
        return EvalData(pool.subset("train"), pool.subset("val"), pool.summary())
    train = load_split(source, protocol, "train")
    test = load_split(source, protocol, "test")
    return EvalData((train.images, train.labels), (test.images, test.labels), {"protocol": protocol})


def calibration_set(images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n images, as class-balanced as the classes allow, chosen by a seeded RNG (deterministic)."""
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    take, k = [], 0
    while len(take) < n and any(k < len(p) for p in per_class):  # round-robin over classes
        take.extend(p[k] for p in per_class if k < len(p))
        k += 1
    return images[np.sort(np.array(take[:n], dtype=np.int64))]


def convert(model, mode: str, calibration: np.ndarray | None = None) -> bytes:
    import tensorflow as tf

    if mode not in MODES:
        raise ConvertError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if calibration is None or not len(calibration):
            raise ConvertError("int8 needs calibration images (EMNIST training data)")
        # Same float input the edge feeds before quantizing: upright 0..255 pixels, shape (1, 28, 28, 1).
        def representative():
            for img in calibration:
                yield [img[None, ..., None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):  # Keras' export prints its endpoint listing
        return converter.convert()


def add_metadata(tflite: bytes, entries: dict[str, bytes]) -> bytes:
    """Append named metadata entries (Model.metadata -> Model.buffers) so one .tflite file is enough to run."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() not in entries]
    for name, payload in entries.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(payload, np.uint8)
        model.buffers.append(buf)
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = len(model.buffers) - 1
        model.metadata.append(meta)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def verify(tflite_path: Path, keras_model, images: np.ndarray, labels: np.ndarray, runtime: str | None = None) -> dict:
    """Run the .tflite as the edge does and compare with Keras on the same images."""
    edge = EdgeModel(tflite_path, runtime=runtime)
    tfl = edge.predict_proba(images)
    ref = keras_model.predict(images[..., None].astype(np.float32), batch_size=1024, verbose=0)
    agree = float(np.mean(tfl.argmax(1) == ref.argmax(1)))
    acc_t, acc_k = float(np.mean(tfl.argmax(1) == labels)), float(np.mean(ref.argmax(1) == labels))
    return {"images": int(len(labels)), "agreement": agree, "tflite_accuracy": acc_t, "keras_accuracy": acc_k,
            "accuracy_delta_pp": 100 * (acc_t - acc_k), "max_abs_prob_diff": float(np.max(np.abs(tfl - ref))),
            "runtime": f"{edge.runtime} {edge.runtime_version}"}


def convert_file(keras_path: Path, out_dir: Path, modes=DEFAULT_MODES, data: str | None = None,
                 calibration: int = DEFAULT_CALIBRATION, verify_n: int = 5000, min_agreement: float = 0.99,
                 do_verify: bool = True, runtime: str | None = None, progress=print) -> list[dict]:
    for m in modes:
        if m not in MODES:
            raise ConvertError(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if not keras_path.is_file():
        raise ConvertError(f"model not found: {keras_path}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvertError(f"output folder {out_dir} is a file")
    card = load_card(keras_path)
    need_data = do_verify or "int8" in modes
    ev = load_eval_data(card, data, progress) if need_data else None  # before TensorFlow: fail fast on no data

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from ..training import models  # noqa: F401  registers the custom loss so the .keras file loads

    try:
        model = keras.models.load_model(keras_path, compile=False)
    except Exception as e:
        raise ConvertError(f"{keras_path} is not a readable Keras model ({type(e).__name__})") from None
    if tuple(model.input_shape[1:]) != (28, 28, 1):
        raise ConvertError(f"{keras_path}: input shape {model.input_shape} is not (None, 28, 28, 1)")
    keras_sha = hashlib.sha256(keras_path.read_bytes()).hexdigest()

    calib = calibration_set(*ev.calibration_pool, calibration) if "int8" in modes else None
    if ev is not None:
        vx, vy = ev.verify
        pick = np.random.default_rng(1).permutation(len(vy))[:verify_n]
        vx, vy = vx[np.sort(pick)], vy[np.sort(pick)]

    out_dir.mkdir(parents=True, exist_ok=True)
    name = keras_path.name.removesuffix(".keras")
    results = []
    for mode in modes:
        progress(f"converting {name} to {mode}")
        meta = {
            "format": 1, "name": name, "mode": mode, "classes": card["classes"], "input": card["input"],
            "dataset": {k: card.get("dataset", {}).get(k) for k in ("protocol", "split_hash")},
            "keras_sha256": keras_sha, "tensorflow": tf.__version__,
            "calibration": {"images": int(len(calib)), "source": "class-balanced training images, seed 0"}
            if mode == "int8" else None,
        }
        blob = add_metadata(convert(model, mode, calib), {METADATA_NAME: json.dumps(meta).encode()})
        path = out_dir / f"{name}.{mode}.tflite"
        # Write under a temp name, verify that file, and only then rename: a failed check never replaces a good model.
        with replacing(path) as tmp:
            tmp.write_bytes(blob)
            result = {"mode": mode, "path": str(path), "size_bytes": len(blob),
                      "sha256": hashlib.sha256(blob).hexdigest()}
            if do_verify:
                result["verify"] = verify(tmp, model, vx, vy, runtime)
                v = result["verify"]
                progress(f"  {mode}: agreement with Keras {v['agreement']:.4%}, accuracy {v['tflite_accuracy']:.4%} "
                         f"vs Keras {v['keras_accuracy']:.4%} ({v['accuracy_delta_pp']:+.2f} pp) on {v['images']} "
                         f"validation images")
                if v["agreement"] < min_agreement:
                    raise ConvertError(f"{mode}: agreement with Keras {v['agreement']:.4f} is below "
                                       f"--min-agreement {min_agreement}; {path} was not written")
        results.append(result)
    return results
