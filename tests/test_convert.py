"""Conversion: every mode from a tiny trained model, each result run through the interpreter; bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from emnist_edge.convert.convert import MODES, calibration_set, convert_file  # noqa: E402
from emnist_edge.edge.runtime import EdgeModel, read_metadata  # noqa: E402
from fixtures import environment  # noqa: E402


@pytest.fixture(scope="module")
def converted(tiny_model, fixture_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite")
    with environment(dict(fixture_data["env"], EMNIST_EDGE_CACHE=str(out / "cache"))):
        results = convert_file(tiny_model["keras"], out, MODES, calibration=50, verify_n=200, min_agreement=0.0,
                               progress=lambda m: None)
    return {r["mode"]: r for r in results}


def test_every_mode_runs_in_the_interpreter_and_matches_keras(converted, tiny_model):
    assert set(converted) == set(MODES)
    for mode, r in converted.items():
        m = EdgeModel(r["path"])
        assert m.mode == mode and m.chars == tiny_model["card"]["classes"]
        v = r["verify"]
        assert v["images"] > 0
        # float files compute what Keras computes; quantized ones stay close in probability (a one-epoch tiny
        # model outputs near-uniform probabilities, so top-1 agreement says little about them)
        if mode in ("float32", "float16"):
            assert v["agreement"] >= 0.99 and v["max_abs_prob_diff"] < 1e-3, (mode, v)
        else:
            assert v["max_abs_prob_diff"] < 0.05, (mode, v)


def test_int8_is_integer_end_to_end(converted):
    m = EdgeModel(converted["int8"]["path"])
    info = m.info()
    assert info["input"]["dtype"] == "int8" and info["output"]["dtype"] == "int8"
    assert info["input"]["scale"] > 0  # read from the tensor, never hard-coded
    x = m.quantize_input(np.full((1, 28, 28), 255, np.uint8))
    assert x.dtype == np.int8


def test_metadata_binds_the_file_to_its_source(converted, tiny_model):
    import hashlib

    blob = open(converted["float32"]["path"], "rb").read()
    meta = json.loads(read_metadata(blob)["emnist_edge"])
    assert meta["keras_sha256"] == hashlib.sha256(tiny_model["keras"].read_bytes()).hexdigest()
    assert meta["input"]["shape"] == [28, 28, 1] and len(meta["classes"]) == 47
    assert converted["float32"]["sha256"] == hashlib.sha256(blob).hexdigest()


def test_quantized_files_are_smaller(converted):
    f32 = converted["float32"]["size_bytes"]
    assert converted["float16"]["size_bytes"] < f32
    assert converted["int8"]["size_bytes"] < f32


def test_calibration_is_class_balanced_and_deterministic():
    labels = np.array([0] * 100 + [1] * 10 + [2] * 3)
    images = np.arange(len(labels))[:, None, None] * np.ones((1, 28, 28), np.int64)
    a = calibration_set(images, labels, 9)
    b = calibration_set(images, labels, 9)
    assert np.array_equal(a, b)
    assert sorted(np.bincount(labels[a[:, 0, 0]]).tolist()) == [3, 3, 3]


def run_convert(args, env):
    return subprocess.run([sys.executable, "-m", "emnist_edge.convert.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=600)


def test_agreement_below_threshold_fails_and_writes_nothing(tiny_model, fixture_data, tmp_path):
    r = run_convert([str(tiny_model["keras"]), "--mode", "int8", "--out", str(tmp_path), "--calibration", "20",
                     "--verify-n", "100", "--min-agreement", "1.01"], dict(fixture_data["env"],
                                                                           EMNIST_EDGE_CACHE=str(tmp_path / "c")))
    assert r.returncode == 2 and "below --min-agreement" in r.stderr
    assert not list(tmp_path.glob("*.tflite")) and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("case, message", [
    ("missing", "model not found"),
    ("not_keras", "not a readable Keras model"),
    ("no_card", "no model card"),
    ("bad_mode", "invalid choice"),
    ("no_data", "no EMNIST data"),
])
def test_bad_input(case, message, tmp_path, tiny_model, fixture_data):
    import shutil

    env = {"EMNIST_DATA": "", "HOME": str(tmp_path)}
    model = tmp_path / "m.keras"
    shutil.copy(tiny_model["keras"], model)
    shutil.copy(tiny_model["dir"] / "tiny.card.json", tmp_path / "m.card.json")
    args = [str(model)]
    if case == "missing":
        args = [str(tmp_path / "nope.keras"), "--no-verify", "--mode", "float32"]
    elif case == "not_keras":
        model.write_bytes(b"not a zip")
        args += ["--no-verify", "--mode", "float32"]
    elif case == "no_card":
        (tmp_path / "m.card.json").unlink()
    elif case == "bad_mode":
        args += ["--mode", "int4"]
    r = run_convert(args, env)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.glob("*.tflite"))
