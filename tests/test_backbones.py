"""Backbones: stage shapes per level, in-model preprocessing, weights files, argument checks."""

import keras
import numpy as np
import pytest

from atalp_tf.models import backbones
from atalp_tf.models.preprocessing import CaffePreprocessing


def test_resnet18_stage_shapes_and_widths():
    model = backbones.resnet18(7, (32, 32, 3), width=4)
    outputs = model(np.zeros((2, 32, 32, 3), "float32"))
    assert set(outputs) == {"conv2", "conv3", "conv4", "conv5", "logits"}
    assert outputs["conv2"].shape == (2, 32, 32, 4)
    assert outputs["conv3"].shape == (2, 16, 16, 8)
    assert outputs["conv4"].shape == (2, 8, 8, 16)
    assert outputs["conv5"].shape == (2, 4, 4, 32)
    assert outputs["logits"].shape == (2, 7)


def test_resnet18_normalises_inside_the_model():
    model = backbones.resnet18(3, (8, 8, 1), width=2)
    normalize = model.get_layer("normalize")
    out = normalize(np.full((1, 8, 8, 1), 0.75, "float32"))
    np.testing.assert_allclose(out, 1.0, rtol=1e-5)  # (0.75 - 0.5) / 0.25


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=1), "Received: num_classes=1"),
        (dict(width=0), "Received: width=0"),
        (dict(input_shape=(32, 32)), "Received: input_shape=\\(32, 32\\)"),
    ],
)
def test_resnet18_rejects_bad_arguments(kwargs, message):
    arguments = dict(num_classes=10, input_shape=(32, 32, 3), width=4) | kwargs
    with pytest.raises(ValueError, match=message):
        backbones.resnet18(**arguments)


def test_caffe_preprocessing_matches_keras_applications():
    pixels = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    expected = keras.applications.resnet.preprocess_input(pixels * 255.0)
    np.testing.assert_allclose(CaffePreprocessing()(pixels), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "architecture, blocks", [("resnet50", 6), ("resnet101", 23), ("resnet152", 36)]
)
def test_keras_resnet_reads_the_last_block_of_each_stage(architecture, blocks):
    model = backbones.keras_resnet(architecture, 4, (32, 32, 3), weights=None)
    extractor = model.get_layer(architecture)
    names = [t._keras_history.operation.name for t in extractor.outputs]
    assert f"conv4_block{blocks}_out" in names
    outputs = model(np.zeros((1, 32, 32, 3), "float32"))
    assert [outputs[s].shape[1:] for s in backbones.STAGES] == [
        (8, 8, 256), (4, 4, 512), (2, 2, 1024), (1, 1, 2048)
    ]
    assert outputs["logits"].shape == (1, 4)


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory):
    """Stands in for the ImageNet download: a headless ResNet-50's weights written to a file."""
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    kernel = source.get_layer("conv1_conv").kernel
    kernel.assign(np.random.default_rng(0).normal(size=kernel.shape).astype("float32"))
    path = str(tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5")
    source.save_weights(path)
    return path, kernel.numpy()


def test_keras_resnet_loads_a_weights_file(resnet50_weights):
    path, kernel = resnet50_weights
    model = backbones.keras_resnet("resnet50", 5, (32, 32, 3), weights=path)
    loaded = model.get_layer("resnet50").get_layer("conv1_conv").kernel.numpy()
    np.testing.assert_array_equal(loaded, kernel)


def test_grayscale_input_goes_through_imagenet_weights_as_three_equal_channels(resnet50_weights):
    path, _ = resnet50_weights
    gray = backbones.keras_resnet("resnet50", 5, (32, 32, 1), weights=path)
    rgb = backbones.keras_resnet("resnet50", 5, (32, 32, 3), weights=path)
    rgb.get_layer("logits").set_weights(gray.get_layer("logits").get_weights())
    image = np.random.default_rng(1).random((2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(
        gray(image)["logits"], rgb(np.repeat(image, 3, axis=-1))["logits"], rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
def test_weights_that_do_not_fit_or_cannot_be_downloaded_say_what_to_do(resnet50_weights, monkeypatch):
    from atalp_tf.errors import WeightsError

    path, _ = resnet50_weights
    with pytest.raises(WeightsError) as wrong:
        backbones.keras_resnet("resnet101", 5, (32, 32, 3), weights=path)
    message = str(wrong.value)
    assert message.startswith(f"`weights={path}` does not fit resnet101")
    assert "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5" in message and len(message) < 700

    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3] Temporary")

    monkeypatch.setitem(backbones._KERAS_RESNETS, "resnet50", (offline, (3, 4, 6, 3)))
    with pytest.raises(WeightsError, match="On a machine without network, fetch that file elsewhere and pass `weights"):
        backbones.keras_resnet("resnet50", 5, (32, 32, 3), weights="imagenet")


def test_keras_resnet_rejects_a_missing_weights_file_and_other_architectures(tmp_path):
    with pytest.raises(ValueError, match="existing weights file"):
        backbones.keras_resnet("resnet50", 5, (32, 32, 3), weights=str(tmp_path / "nope.h5"))
    with pytest.raises(ValueError, match="Received: architecture='resnet34'"):
        backbones.keras_resnet("resnet34", 5, (32, 32, 3), weights=None)
