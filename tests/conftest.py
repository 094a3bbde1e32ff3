"""Test set-up: two logical CPUs for MirroredStrategy, made before TensorFlow initialises."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over the two logical CPUs for the whole session: a second one in
    the same process hands out collective keys that collide with the first's (synchronised
    batch norm then fails with "Shape mismatch in the collective instance")."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(autouse=True)
def _float32_policy():
    """A test that sets a mixed-precision policy must not leak it into the next one."""
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def digits16():
    """scikit-learn's digits at 16x16 in [0, 1]: (train_x, train_y, test_x, test_y)."""
    from atalp_tf.datasets import digits
    from atalp_tf.datasets.splits import stratified_split

    images, labels = digits.load_arrays()
    images = tf.image.resize(images, (16, 16), antialias=True).numpy().clip(0, 1)
    train, test = stratified_split(labels, (0.8, 0.2), seed=0)
    return images[train], labels[train], images[test], labels[test]


@pytest.fixture(scope="session")
def standard_model(digits16):
    """A tiny ResNet-18 trained without attacks: the target on which attacks must work."""
    from atalp_tf.models import backbones
    from atalp_tf.models.classifier import RobustClassifier

    keras.utils.set_random_seed(0)
    x, y, x_test, y_test = digits16
    model = RobustClassifier(backbones.resnet18(10, (16, 16, 1), width=8), method="standard")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, y, batch_size=64, epochs=8, verbose=0)
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)
    assert accuracy > 0.9, f"the standard model should learn digits; test accuracy {accuracy:.3f}"
    return model


@pytest.fixture(scope="session")
def source_model(digits16):
    """A second standard model (other width and seed): the black-box source of transfer attacks."""
    from atalp_tf.models import backbones
    from atalp_tf.models.classifier import RobustClassifier

    keras.utils.set_random_seed(1)
    x, y, _, _ = digits16
    model = RobustClassifier(backbones.resnet18(10, (16, 16, 1), width=4), method="standard")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, y, batch_size=64, epochs=6, verbose=0)
    return model


def tiny_cnn(num_classes, input_shape):
    """Four strided convolutions standing in for ResNet's stages: a backbone cheap enough to
    run a full AutoAttack on in a test."""
    inputs = keras.Input(input_shape, name="images")
    x, outputs = inputs, {}
    for stage, filters, stride in zip(("conv2", "conv3", "conv4", "conv5"), (16, 32, 32, 64), (1, 2, 2, 2)):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu", name=stage)(x)
        outputs[stage] = x
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    outputs["logits"] = keras.layers.Dense(num_classes, name="logits")(pooled)
    return keras.Model(inputs, outputs, name="tiny_cnn")


@pytest.fixture(scope="session")
def robust_cnn(digits16):
    """A small CNN trained with PGD-5 at eps 0.1 (PAT): robust enough that attacks have work left."""
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.models.classifier import RobustClassifier

    keras.utils.set_random_seed(0)
    x, y, _, _ = digits16
    model = RobustClassifier(tiny_cnn(10, (16, 16, 1)), method="pat", train_attack=PGDConfig(0.1, 0.025, 5), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, y, batch_size=64, epochs=15, verbose=0)
    return model
