"""Training with tf.data + Keras fit: augmentation, class weights, LR schedule, checkpoints, --resume, tf.distribute."""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data import DataError, find_source, load_split
from .files import replacing, write_atomic
from .pool import Pool, build_pool

INPUT_SPEC = {
    "shape": [28, 28, 1],
    "dtype": "float32",
    "scaling": "pixel values 0..255 (the model rescales to 0..1 inside)",
    "orientation": "upright (NIST files are transposed; the reader un-transposes)",
    "polarity": "white ink (255) on black background (0)",
    "glyph_fit": "EMNIST style: ink bounding box centred in a square with a 2 px border, scaled to 28x28",
}


@dataclass
class TrainConfig:
    data: str | None = None
    protocol: str = "pool"  # pool or an official split name
    arch: str = "edge_vgg"
    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    seed: int = 0
    out: str = "runs/edge_vgg"
    class_weights: bool = True
    augment: bool = True
    label_smoothing: float = 0.05
    patience: int = 4
    strategy: str = "default"  # default, mirrored, multiworker
    cpu_replicas: int = 0  # split the CPU into N logical devices (to exercise MirroredStrategy without GPUs)
    limit: int = 0  # use only the first N training images (smoke runs)
    test_per_class: int = 400  # pool protocol test images per class (tests use tiny fixtures)
    resume: bool = False
    init: str | None = None  # start from this .keras model's weights (fine-tuning), with a fresh optimizer
    extra: dict = field(default_factory=dict)


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    chars: list
    description: dict


def load_dataset(cfg: TrainConfig, progress=print) -> Dataset:
    source = find_source(cfg.data)
    if cfg.protocol == "pool":
        pool: Pool = build_pool(source, seed=cfg.seed, progress=progress, test_per_class=cfg.test_per_class)
        (xtr, ytr), (xv, yv), (xte, yte) = (pool.subset(s) for s in ("train", "val", "test"))
        desc = pool.summary()
    else:
        train = load_split(source, cfg.protocol, "train")
        test = load_split(source, cfg.protocol, "test")
        # Validation comes from the training side (a seeded 5% per-class slice), never from the test set.
        rng = np.random.default_rng(cfg.seed)
        val_idx = np.concatenate([
            rng.permutation(np.flatnonzero(train.labels == c))[: max(1, int(0.05 * np.sum(train.labels == c)))]
            for c in range(len(train.chars))
        ])
        mask = np.ones(len(train.labels), bool)
        mask[val_idx] = False
        xtr, ytr, xv, yv = train.images[mask], train.labels[mask], train.images[val_idx], train.labels[val_idx]
        xte, yte = test.images, test.labels
        split_hash = hashlib.sha256(np.sort(val_idx).tobytes() + str(cfg.seed).encode()).hexdigest()
        desc = {"protocol": cfg.protocol, "train": len(ytr), "val": len(yv), "test": len(yte), "split_hash": split_hash,
                "inputs": {n: source.sha256(n) for n in source._members if cfg.protocol in n and n.endswith(".gz")}}
        pool = train
    if cfg.limit:
        xtr, ytr = xtr[: cfg.limit], ytr[: cfg.limit]
    chars = pool.chars
    return Dataset(xtr, ytr, xv, yv, xte, yte, list(chars), desc)


def class_weights(labels: np.ndarray, n_classes: int) -> dict:
    """Inverse-frequency weights (mean 1 over the samples): the balanced test set counts every class equally."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def augment_batch(tf, images, seed_pair):
    """Light, label-preserving distortions real handwriting needs: rotation +-10 deg, shear +-0.2, scale 0.85-1.1,
    shift +-2 px, and stroke thickness (dilate/erode) on a third of the images each. Never flips."""
    n = tf.shape(images)[0]
    s = tf.random.stateless_uniform
    rot = s([n], seed_pair, -0.175, 0.175)
    shear = s([n], seed_pair + [1, 0], -0.2, 0.2)
    scale = s([n], seed_pair + [2, 0], 0.85, 1.1)
    tx = s([n], seed_pair + [3, 0], -2.0, 2.0)
    ty = s([n], seed_pair + [4, 0], -2.0, 2.0)
    c, sn = tf.cos(rot), tf.sin(rot)
    # Output->input map about the image centre (13.5, 13.5): A = R * Shear / scale.
    a0, a1 = c / scale, (c * shear - sn) / scale
    b0, b1 = sn / scale, (sn * shear + c) / scale
    cx = 13.5
    a2 = cx - a0 * cx - a1 * cx + tx
    b2 = cx - b0 * cx - b1 * cx + ty
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[28, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    pick = s([n, 1, 1, 1], seed_pair + [5, 0], 0.0, 1.0)
    thick = tf.nn.max_pool2d(out, 2, 1, "SAME")
    thin = -tf.nn.max_pool2d(-out, 2, 1, "SAME")
    out = tf.where(pick < 0.17, thick, tf.where(pick > 0.83, thin, out))
    return out


def make_datasets(tf, ds: Dataset, cfg: TrainConfig, global_batch: int):
    weights = class_weights(ds.y_train, len(ds.chars)) if cfg.class_weights else None
    x = ds.x_train[..., None].astype(np.float32)
    y = ds.y_train
    train = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    train = train.shuffle(min(len(y), 50_000), seed=cfg.seed, reshuffle_each_iteration=True)
    train = train.batch(global_batch)
    if weights is not None:
        table = tf.constant([weights[i] for i in range(len(ds.chars))], tf.float32)
        train = train.map(lambda a, b: (a, b, tf.gather(table, b)), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.augment:
        counter = tf.data.Dataset.counter()
        train = tf.data.Dataset.zip((train, counter)).map(
            lambda batch, i: (augment_batch(tf, batch[0], tf.stack([tf.cast(i, tf.int32), cfg.seed])),) + tuple(batch[1:]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    train = train.prefetch(tf.data.AUTOTUNE)
    val = tf.data.Dataset.from_tensor_slices((ds.x_val[..., None].astype(np.float32), ds.y_val)).batch(1024).cache()
    return train, val.prefetch(tf.data.AUTOTUNE), weights


def make_strategy(tf, cfg: TrainConfig):
    if cfg.cpu_replicas:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(cfg.cpu_replicas)])
    if cfg.strategy == "default":
        return tf.distribute.get_strategy()
    if cfg.strategy == "mirrored":
        devices = None
        if cfg.cpu_replicas:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if cfg.strategy == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise DataError("--strategy multiworker needs TF_CONFIG (cluster and task) in the environment")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise DataError(f"unknown strategy {cfg.strategy!r}; choose default, mirrored or multiworker")


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:
        return None


def plot_curves(history: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(history["loss"]) + 1)
    ax1.plot(epochs, history["loss"], label="train")
    ax1.plot(epochs, history["val_loss"], label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, history["accuracy"], label="train")
    ax2.plot(epochs, history["val_accuracy"], label="validation")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def train(cfg: TrainConfig, progress=print) -> dict:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"output folder {out} is a file")
    ckpt_dir = out / "checkpoints" / cfg.arch  # one folder per architecture: runs may share --out
    state_path = ckpt_dir / "state.json"
    if cfg.resume and not state_path.is_file():
        raise DataError(f"--resume: no checkpoint in {ckpt_dir}")

    # Data first (numpy only), TensorFlow after: missing data or bad arguments fail fast and quietly.
    ds = load_dataset(cfg, progress)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from .models import ARCHITECTURES, SparseSmoothedCrossentropy, count_macs

    if cfg.arch not in ARCHITECTURES:
        raise DataError(f"unknown architecture {cfg.arch!r}; choose from {', '.join(ARCHITECTURES)}")
    keras.utils.set_random_seed(cfg.seed)
    strategy = make_strategy(tf, cfg)
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    train_ds, val_ds, weights = make_datasets(tf, ds, cfg, global_batch)
    steps = math.ceil(len(ds.y_train) / global_batch)

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    history: dict = {}
    initial_epoch = 0
    with strategy.scope():
        if cfg.resume:
            state = json.loads(state_path.read_text())
            try:
                model = keras.models.load_model(ckpt_dir / "last.keras")
            except Exception as e:
                raise DataError(f"--resume: unreadable checkpoint {ckpt_dir / 'last.keras'} ({type(e).__name__})") from None
            history, initial_epoch = state["history"], state["epoch"]
            progress(f"resuming after epoch {initial_epoch}")
        else:
            model = ARCHITECTURES[cfg.arch](len(ds.chars))
            if cfg.init:
                try:
                    model.set_weights(keras.models.load_model(cfg.init, compile=False).get_weights())
                except Exception as e:
                    raise DataError(f"--init: cannot take weights from {cfg.init} ({type(e).__name__})") from None
            # Cosine decay over all steps; the optimizer's iteration counter is saved with the checkpoint,
            # so a resumed run continues on the same schedule.
            schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=max(1, cfg.epochs * steps), alpha=0.02)
            model.compile(
                optimizer=keras.optimizers.Adam(schedule),
                loss=SparseSmoothedCrossentropy(len(ds.chars), cfg.label_smoothing),
                metrics=["accuracy"],
            )

    class Checkpoint(keras.callbacks.Callback):
        """Each epoch: last.keras (with optimizer state) and state.json, both written atomically."""

        def __init__(self):
            super().__init__()
            self.best = max(history.get("val_accuracy", [0.0]) or [0.0])
            self.wait = 0

        def on_epoch_end(self, epoch, logs=None):
            for k, v in (logs or {}).items():
                history.setdefault(k, []).append(float(v))
            with replacing(ckpt_dir / "last.keras") as tmp:  # Keras wants the .keras suffix: replacing keeps it
                self.model.save(tmp)
            if logs["val_accuracy"] > self.best:
                self.best = logs["val_accuracy"]
                self.wait = 0
                with replacing(ckpt_dir / "best.keras") as tmp:
                    shutil.copyfile(ckpt_dir / "last.keras", tmp)
            else:
                self.wait += 1
                if self.wait >= cfg.patience:
                    progress(f"early stop: validation accuracy has not improved for {cfg.patience} epochs")
                    self.model.stop_training = True
            write_atomic(state_path, json.dumps({"epoch": epoch + 1, "history": history, "config": asdict(cfg)}))

    if initial_epoch < cfg.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
                  callbacks=[Checkpoint()], verbose=2 if not sys.stdout.isatty() else 1)

    best = keras.models.load_model(ckpt_dir / "best.keras", compile=False) if (ckpt_dir / "best.keras").exists() else model
    val_acc = evaluate(best, ds.x_val, ds.y_val)
    test_acc = evaluate(best, ds.x_test, ds.y_test)
    progress(f"validation accuracy {val_acc:.4f}  test accuracy {test_acc:.4f}")

    name = cfg.arch
    keras_path = out / f"{name}.keras"
    with replacing(keras_path) as tmp:  # a failed run never gets here, so a previous good model survives
        best.save(tmp)
    card = {
        "name": name,
        "architecture": cfg.arch,
        "dataset": ds.description,
        "classes": ds.chars,
        "input": INPUT_SPEC,
        "params": int(best.count_params()),
        "macs_per_image": count_macs(best),
        "epochs_run": len(history.get("loss", [])),
        "val_accuracy": round(val_acc, 6),
        "test_accuracy": round(test_acc, 6),
        "test_set": f"{cfg.protocol} test ({len(ds.y_test)} images)",
        "class_weights": bool(weights),
        "augment": cfg.augment,
        "config": asdict(cfg),
        "keras_sha256": hashlib.sha256(keras_path.read_bytes()).hexdigest(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "replicas": strategy.num_replicas_in_sync,
        "global_batch": global_batch,
    }
    if cfg.arch == "edge_vgg":
        card["design"] = ("VGG-style Conv+BN+ReLU with max pooling: ops that fold (BN) and quantize cleanly and run in "
                          "XNNPACK; Flatten after pooling keeps spatial detail for look-alike classes; width chosen "
                          "to stay near 15 MMACs and under 1M parameters.")
    write_atomic(out / f"{name}.history.json", json.dumps(history, indent=1))
    write_atomic(out / f"{name}.card.json", json.dumps(card, indent=1))
    plot_curves(history, out / f"{name}.curves.png", f"{name} on {cfg.protocol}")
    return card


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch: int = 2048) -> float:
    probs = model.predict(images[..., None].astype(np.float32), batch_size=batch, verbose=0)
    return float(np.mean(np.argmax(probs, 1) == labels))
