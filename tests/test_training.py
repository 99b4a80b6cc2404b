"""Training: a tiny model for one epoch on generated data, resume, tf.distribute on split CPUs, bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from emnist_edge.training.train import class_weights

pytest.importorskip("tensorflow")


def run_train(args, env_extra, cwd=None):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-m", "emnist_edge.training.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_class_weights_balance_the_classes():
    labels = np.array([0] * 90 + [1] * 10)
    w = class_weights(labels, 2)
    assert w[1] == pytest.approx(9 * w[0])
    assert np.mean([w[y] for y in labels]) == pytest.approx(1.0)  # same loss scale as unweighted


def test_tiny_model_trains_and_writes_its_card(tiny_model):
    out, card = tiny_model["dir"], tiny_model["card"]
    for suffix in (".keras", ".card.json", ".history.json", ".curves.png"):
        assert (out / f"tiny{suffix}").stat().st_size > 0
    on_disk = json.loads((out / "tiny.card.json").read_text())
    assert on_disk == card
    assert len(card["classes"]) == 47 and card["classes"][36] == "a"
    assert card["params"] > 0 and card["macs_per_image"] == 13 * 13 * 9 * 4 + 13 * 13 * 4 * 47
    assert 0 <= card["test_accuracy"] <= 1 and card["dataset"]["protocol"] == "pool"
    assert card["input"]["polarity"].startswith("white ink")
    assert set(card["versions"]) >= {"tensorflow", "keras"}
    assert card["dataset"]["overlap"] == {"train&val": 0, "train&test": 0, "val&test": 0}


def test_seed_architecture_matches_the_notebook():
    from emnist_edge.training.models import count_macs, seed

    m = seed(47)
    assert m.count_params() == 98_559
    assert count_macs(m) > 0


def test_edge_model_is_within_budget():
    from emnist_edge.training.models import count_macs, edge_vgg

    m = edge_vgg(47)
    assert m.count_params() <= 1_000_000 and count_macs(m) <= 16_000_000


def test_resume_continues_from_the_last_checkpoint(fixture_data, tmp_path):
    env = dict(fixture_data["env"], EMNIST_EDGE_CACHE=str(tmp_path / "cache"))
    common = ["--arch", "tiny", "--batch-size", "64", "--test-per-class", "4", "--out", str(tmp_path / "run")]
    r = run_train(common + ["--epochs", "1"], env)
    assert r.returncode == 0, r.stderr
    r = run_train(common + ["--epochs", "2", "--resume"], env)
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch 1" in r.stdout
    state = json.loads((tmp_path / "run/checkpoints/tiny/state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]["loss"]) == 2


def test_mirrored_strategy_on_two_logical_cpus(fixture_data, tmp_path):
    env = dict(fixture_data["env"], EMNIST_EDGE_CACHE=str(tmp_path / "cache"))
    r = run_train(["--arch", "tiny", "--epochs", "1", "--batch-size", "32", "--test-per-class", "4",
                   "--strategy", "mirrored", "--cpu-replicas", "2", "--out", str(tmp_path / "m"), "--json"], env)
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout.strip().splitlines()[-1])
    assert card["replicas"] == 2 and card["global_batch"] == 64


@pytest.mark.parametrize("args, message", [
    (["--arch", "resnet999"], "unknown architecture"),
    (["--protocol", "klingon"], "unknown split"),
    (["--data", "/nonexistent/emnist"], "not found"),
    (["--resume", "--out", "{tmp}/empty"], "no checkpoint"),
    (["--out", "{tmp}/a_file"], "is a file"),
])
def test_bad_input_is_one_clear_line(args, message, fixture_data, tmp_path):
    (tmp_path / "a_file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = run_train(["--epochs", "1"] + args, fixture_data["env"])
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unreadable_checkpoint_keeps_the_previous_model(fixture_data, tmp_path):
    out = tmp_path / "run"
    ck = out / "checkpoints" / "tiny"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text(json.dumps({"epoch": 1, "history": {}}))
    (ck / "last.keras").write_bytes(b"garbage")
    good = out / "tiny.keras"
    good.write_bytes(b"previous good model")
    env = dict(fixture_data["env"], EMNIST_EDGE_CACHE=str(tmp_path / "cache"))
    r = run_train(["--arch", "tiny", "--epochs", "2", "--resume", "--test-per-class", "4", "--out", str(out)], env)
    assert r.returncode == 2 and "unreadable checkpoint" in r.stderr
    assert "Traceback" not in r.stderr
    assert good.read_bytes() == b"previous good model"


def test_init_fine_tunes_from_a_trained_model(tiny_model, fixture_data, tmp_path):
    env = dict(fixture_data["env"], EMNIST_EDGE_CACHE=str(tmp_path / "cache"))
    r = run_train(["--arch", "tiny", "--epochs", "1", "--test-per-class", "4", "--init", str(tiny_model["keras"]),
                   "--lr", "0", "--no-augment", "--out", str(tmp_path / "ft"), "--json"], env)
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout.strip().splitlines()[-1])
    assert card["config"]["init"] == str(tiny_model["keras"])
    # with a zero learning rate the weights stay those of the model it started from
    import keras

    a = keras.models.load_model(tiny_model["keras"], compile=False).get_weights()
    b = keras.models.load_model(tmp_path / "ft/tiny.keras", compile=False).get_weights()
    assert all(np.allclose(x, y) for x, y in zip(a, b))
