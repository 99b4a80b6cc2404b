"""Architectures. Every model takes (28, 28, 1) float pixels in 0..255 (upright, white ink on black) and rescales
inside the graph: the int8 TFLite input then maps each 0..255 pixel exactly (scale 1, zero point -128)."""
from __future__ import annotations

import keras
from keras import layers


def seed(num_classes: int) -> keras.Model:
    """The notebook's model, exactly (Keras 3 needs AveragePooling2D's pool_size spelled out)."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Rescaling(1 / 255),
            layers.Conv2D(6, (3, 3), activation="relu"),
            layers.AveragePooling2D(pool_size=(2, 2)),
            layers.Conv2D(16, (3, 3), activation="relu"),
            layers.AveragePooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dense(188, activation="relu"),
            layers.Dense(94, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed",
    )


def _conv_bn(x, filters):
    # No bias: BatchNorm's shift does that job, and the converter folds BN into the conv at export.
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def edge_vgg(num_classes: int, width: int = 32, dropout: float = 0.3) -> keras.Model:
    """VGG-style net sized for the edge and for int8: Conv+BN+ReLU and max pooling only (all fold or quantize
    cleanly in TFLite and run in XNNPACK), about 15 MMACs and 0.5M parameters at width 32.

    Why this shape: EMNIST glyphs need spatial detail (Flatten after 7x7 beats global pooling for look-alike
    classes such as 1/l/I, O/0, 9/q), most MACs sit in the 14x14 stage, and a narrow dense head keeps the
    parameter count (and the file) small."""
    w = width
    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = _conv_bn(x, w)
    x = layers.MaxPooling2D(2)(x)  # 14x14
    x = _conv_bn(x, 2 * w)
    x = _conv_bn(x, 2 * w)
    x = layers.MaxPooling2D(2)(x)  # 7x7
    x = _conv_bn(x, 4 * w)
    x = layers.MaxPooling2D(2, padding="same")(x)  # 4x4
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(4 * w * 2, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="edge_vgg")


def tiny(num_classes: int) -> keras.Model:
    """For tests: trains in seconds."""
    return keras.Sequential(
        [keras.Input((28, 28, 1)), layers.Rescaling(1 / 255), layers.Conv2D(4, 3, strides=2, activation="relu"),
         layers.Flatten(), layers.Dense(num_classes, activation="softmax")],
        name="tiny",
    )


ARCHITECTURES = {"seed": seed, "edge_vgg": edge_vgg, "tiny": tiny}


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates per image of the layers that dominate the cost (conv, depthwise conv, dense)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        out = layer.output.shape
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * kh * kw * out[3]
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += out[1] * out[2] * kh * kw * cin * out[3] // layer.groups
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * out[-1]
    return int(total)


@keras.saving.register_keras_serializable(package="emnist_edge")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Sparse labels with label smoothing (Keras 3's sparse CE has none); registered so checkpoints reload."""

    def __init__(self, num_classes: int, smoothing: float = 0.0, name="sparse_smoothed_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.smoothing = num_classes, smoothing

    def call(self, y_true, y_pred):
        y = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        return keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=self.smoothing)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "smoothing": self.smoothing}
