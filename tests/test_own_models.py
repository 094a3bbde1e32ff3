"""A Keras user's own model: trained adversarially by fit, saved, loaded, evaluated by
``atalp_tf.evaluate`` with the figures of the command line, and served."""

import io
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from support import PATIENCE
import tensorflow as tf

import atalp_tf
from atalp_tf import datasets
from atalp_tf.evaluation import runner

EPS = 0.1
ATTACK = atalp_tf.PGDConfig(EPS / 2, EPS / 8, 3)
PLAN = dict(eps=[EPS], attacks=["fgsm", "pgd"], steps=[5])


def _digits(size):
    return datasets.load(atalp_tf.DataConfig(name="digits", batch_size=50, image_size=size))


def _train_set(data, count=None):
    """The user's own tf.data pipeline: unbatched examples, their own shuffle and batch."""
    examples = data.train.unbatch()
    return (examples.take(count) if count else examples).shuffle(2000, seed=0).batch(32)


def _saved_and_loaded(model, tmp_path, size):
    """Saves ``model`` and loads it back; the two give the same logits. Returns the loaded
    model and its path."""
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = atalp_tf.load_classifier(str(path))
    probe = next(iter(_digits(size).test))[0][:4]
    np.testing.assert_allclose(loaded(probe), model(probe), atol=1e-5)
    return loaded, path


def _saved_loaded_and_evaluated(model, tmp_path, size, num_examples):
    """Saves ``model``, loads it, and evaluates it in memory and as the command does, on the
    same test images; returns (loaded model, library evaluation, command's evaluation.json)."""
    loaded, path = _saved_and_loaded(model, tmp_path, size)
    evaluation = atalp_tf.evaluate(loaded, _digits(size).test, num_examples=num_examples, batch_size=50, **PLAN)
    runner.evaluate_path(str(path), dataset="digits", image_size=size, out_dir=str(tmp_path / "cli"),
                         num_examples=num_examples, batch_size=50, log=lambda line: None, **PLAN)
    written = json.loads((tmp_path / "cli" / "evaluation.json").read_text())
    assert written["worst_case"][0]["accuracy"] == evaluation.worst_case[EPS]
    assert written["examples"] == evaluation.to_json()["examples"]
    return loaded, evaluation, written


def _sequential_cnn():
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pat", "trades"])
def test_a_sequential_cnn_trains_by_fit_on_the_users_data_and_evaluates_as_the_command_does(method, tmp_path):
    keras.utils.set_random_seed(0)
    data = _digits(16)
    robust = atalp_tf.RobustClassifier(_sequential_cnn(), method=method, train_attack=ATTACK, seed=0)
    robust.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = robust.fit(_train_set(data), epochs=3, verbose=0,
                         callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=5)])
    assert history.history["loss"][-1] < history.history["loss"][0]
    _, evaluation, _ = _saved_loaded_and_evaluated(robust, tmp_path, 16, 100)
    assert evaluation.clean_accuracy > 0.9, evaluation
    # The attack found something, and the worst case is no better than either attack.
    assert evaluation.worst_case[EPS] < evaluation.clean_accuracy
    assert evaluation.worst_case[EPS] <= min(evaluation.accuracy.values())


@pytest.mark.slow
def test_the_command_gives_the_same_figures_as_the_library(tmp_path):
    keras.utils.set_random_seed(1)
    robust = atalp_tf.RobustClassifier(_sequential_cnn(), method="pat", train_attack=ATTACK, seed=0)
    robust.compile(optimizer=keras.optimizers.Adam(3e-3))
    robust.fit(_train_set(_digits(16), 640), epochs=1, verbose=0)
    robust.save(tmp_path / "model.keras")
    result = subprocess.run(
        [sys.executable, "-m", "atalp_tf.evaluate", f"--model={tmp_path / 'model.keras'}", "--dataset=digits",
         "--image_size=16", f"--out_dir={tmp_path / 'out'}", f"--eps={EPS}", "--attacks=fgsm,pgd", "--steps=5",
         "--num_examples=100", "--batch_size=50"],
        capture_output=True, text=True, timeout=PATIENCE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    evaluation = atalp_tf.evaluate(atalp_tf.load_classifier(str(tmp_path / "model.keras")), _digits(16).test,
                                   num_examples=100, batch_size=50, **PLAN)
    assert written["worst_case"][0]["accuracy"] == evaluation.worst_case[EPS]
    assert written["examples"] == evaluation.to_json()["examples"]


@pytest.mark.slow
def test_a_functional_cnn_pairs_the_attention_of_the_stages_it_names(tmp_path):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block1")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="block2")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="block3")(x)
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, logits)
    robust = atalp_tf.RobustClassifier(model, method="at_alp", stages=["block1", "block3"], train_attack=ATTACK)
    assert robust.stages == ("block1", "block3")
    assert set(robust.backbone.output) == {"logits", "block1", "block3"}
    robust.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = robust.fit(_train_set(_digits(16), 320), epochs=1, verbose=0)
    assert history.history["attention_pairing"][0] > 0 and history.history["logit_pairing"][0] > 0
    # The user's model is the trained one: its layers are the classifier's.
    probe = next(iter(_digits(16).test))[0][:4]
    np.testing.assert_allclose(model(probe), robust(probe), atol=1e-6)
    loaded, _, _ = _saved_loaded_and_evaluated(robust, tmp_path, 16, 50)
    assert loaded.stages == ("block1", "block3")


@pytest.mark.slow
def test_a_keras_applications_resnet_has_its_stages_found(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 1), classes=10,
                                        classifier_activation=None)
    robust = atalp_tf.RobustClassifier(model, method="at_alp", train_attack=atalp_tf.PGDConfig(EPS, 0.05, 1))
    assert robust.stage_layers == {"conv2": "conv2_block3_out", "conv3": "conv3_block4_out",
                                   "conv4": "conv4_block6_out", "conv5": "conv5_block3_out"}
    robust.compile(optimizer=keras.optimizers.SGD(0.01))
    history = robust.fit(_train_set(_digits(32), 32), epochs=1, verbose=0)
    assert history.history["attention_pairing"][0] > 0
    # Evaluation sees only the logits, as for the models above; tracing its attacks through
    # ResNet-50 would add most of a minute for nothing they do not check.
    loaded, _ = _saved_and_loaded(robust, tmp_path, 32)
    assert loaded.stage_layers == robust.stage_layers


@pytest.mark.slow
def test_a_keras_hub_backbone_from_a_local_preset_has_its_stages_found(tmp_path):
    keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is the optional extra .[hub]")
    keras.utils.set_random_seed(4)
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=(32, 32, 1),
    ).save_to_preset(str(tmp_path / "preset"))
    backbone = keras_hub.models.ResNetBackbone.from_preset(str(tmp_path / "preset"))
    inputs = keras.Input((32, 32, 1))
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    robust = atalp_tf.RobustClassifier(keras.Model(inputs, logits), method="at", train_attack=ATTACK)
    assert robust.stage_layers == {f"conv{k}": f"stack{k - 2}_block0_out" for k in range(2, 6)}
    robust.compile(optimizer=keras.optimizers.SGD(0.01))
    assert robust.fit(_train_set(_digits(32), 64), epochs=1, verbose=0).history["attention_pairing"][0] > 0
    _saved_loaded_and_evaluated(robust, tmp_path, 32, 20)


def test_a_keras_hub_preset_as_architecture_takes_pixels_in_0_1_through_its_converter(tmp_path):
    keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is the optional extra .[hub]")
    from atalp_tf.models import backbones

    preset = str(tmp_path / "preset")
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
    ).save_to_preset(preset)
    std, mean = (0.2, 0.25, 0.3), (0.4, 0.5, 0.6)
    keras_hub.layers.ResNetImageConverter(
        image_size=(32, 32), scale=[1 / (255 * s) for s in std], offset=[-m / s for m, s in zip(mean, std)],
    ).save_to_preset(preset)
    network = backbones.build(preset, 5, (32, 32, 3))
    assert set(network.output) == {"logits", "conv2", "conv3", "conv4", "conv5"}
    pixels = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    seen = keras.Model(network.input, network.get_layer("hub_preprocessing").output)(pixels)
    np.testing.assert_allclose(seen, (pixels - mean) / std, atol=1e-4)
    with pytest.raises(ValueError, match="brings its own weights"):
        backbones.build(preset, 5, (32, 32, 3), weights="imagenet")


def test_the_export_names_classes_and_serves_encoded_images_as_evaluation_prepares_them(tmp_path):
    from PIL import Image

    from atalp_tf.datasets.pipeline import evaluation_square

    keras.utils.set_random_seed(5)
    robust = atalp_tf.RobustClassifier(keras.Sequential([
        keras.Input((24, 24, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3)]), method="standard")
    export = atalp_tf.export_serving(robust, str(tmp_path / "export"), class_names=["daisy", "rose", "tulip"])
    assert (tmp_path / "export" / "assets" / "class_names.txt").read_text() == "daisy\nrose\ntulip\n"
    served = tf.saved_model.load(export)
    names = served.signatures["class_names"]()["class_names"].numpy()
    assert [n.decode() for n in names] == ["daisy", "rose", "tulip"]
    # A smooth 50x70 image (Pillow and TensorFlow resize a gradient alike).
    ramp = np.linspace(0, 255, 70)[None, :, None] * np.linspace(0.2, 1, 50)[:, None, None]
    image = np.concatenate([ramp, 255 - ramp, ramp[::-1] * 0.5], axis=-1).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(image).save(encoded, format="PNG")
    answer = served.signatures["serve_bytes"](images=tf.constant([encoded.getvalue()] * 2))
    expected = tf.nn.softmax(robust(evaluation_square(image, 24)[None]))
    np.testing.assert_allclose(answer["probabilities"][0], expected[0], atol=1e-5)
    assert [n.decode() for n in answer["class_names"].numpy()] == ["daisy", "rose", "tulip"][:0] + [
        ["daisy", "rose", "tulip"][i] for i in answer["class_ids"].numpy()]
    # The evaluation of image files resizes with Pillow: the served square is within a few levels.
    from atalp_tf.datasets.images import read_resized
    from atalp_tf.datasets.pipeline import load_size

    Image.fromarray(image).save(tmp_path / "image.png")
    decoded = read_resized(str(tmp_path / "image.png"), load_size(24))
    top, left = (decoded.shape[0] - 24) // 2, (decoded.shape[1] - 24) // 2
    evaluated = decoded[top:top + 24, left:left + 24] / 255.0
    assert np.abs(evaluation_square(image, 24).numpy() - evaluated).max() < 4 / 255


def _rest_row_format(request):
    """The tensor TensorFlow Serving's REST API makes of a request's ``instances`` (row format):
    nested lists stacked into one tensor, ``{"b64": ...}`` entries decoded to bytes."""
    import base64

    instances = request["instances"]
    if isinstance(instances[0], dict):
        return tf.constant([base64.b64decode(item["b64"]) for item in instances])
    return tf.constant(instances, dtype=tf.uint8 if request["signature_name"] == "serve_uint8" else tf.float32)


def test_the_readme_rest_requests_reach_the_signatures_they_name(tmp_path):
    import base64

    from PIL import Image
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(6)
    robust = atalp_tf.RobustClassifier(_sequential_cnn(), method="standard")
    # As a run on the digits exports: images resized whole (crop_fraction=None).
    served = tf.saved_model.load(atalp_tf.export_serving(
        robust, str(tmp_path / "export"), class_names=[str(d) for d in range(10)], crop_fraction=None))
    # The requests as the README's commands build them.
    digits = load_digits()
    x = np.kron(digits.images[:2] * 255 / 16, np.ones((2, 2))).astype("uint8")[..., None]
    Image.fromarray(x[0, ..., 0]).save(tmp_path / "digit.png")
    requests = [
        {"signature_name": "serve_uint8", "instances": x.tolist()},
        {"signature_name": "serve_bytes",
         "instances": [{"b64": base64.b64encode((tmp_path / "digit.png").read_bytes()).decode()}]},
        {"signature_name": "serving_default", "instances": (x / 255.0).tolist()},
    ]
    answers = []
    for request in json.loads(json.dumps(requests)):
        outputs = served.signatures[request["signature_name"]](images=_rest_row_format(request))
        assert set(outputs) == {"probabilities", "class_ids", "class_names"}
        ids, names = outputs["class_ids"].numpy(), outputs["class_names"].numpy()
        assert [n.decode() for n in names] == [str(i) for i in ids]
        answers.append(outputs["probabilities"].numpy())
    # The same first image through each signature: the same answer.
    np.testing.assert_allclose(answers[0], answers[2], atol=1e-6)
    np.testing.assert_allclose(answers[1][0], answers[0][0], atol=1e-6)


@pytest.mark.slow
def test_training_runs_on_a_keras_hub_preset_directory_given_as_architecture(tmp_path):
    keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is the optional extra .[hub]")
    keras.utils.set_random_seed(7)
    preset = str(tmp_path / "preset")
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
    ).save_to_preset(preset)
    config = atalp_tf.TrainConfig.from_flat(
        model_dir=str(tmp_path / "run"), data=atalp_tf.DataConfig(name="digits", batch_size=64, image_size=32),
        architecture=preset, method="at_alp", epochs=1, verbose=0, export=False,
        train_attack=atalp_tf.PGDConfig(EPS, EPS, 1), eval_attack=atalp_tf.PGDConfig(EPS, EPS / 4, 2),
    )
    results = atalp_tf.train(config)
    assert results["test_last"]["clean_accuracy"] > 0.1
    loaded = atalp_tf.load_classifier(results["model_path"])
    assert loaded.stages == ("conv2", "conv3", "conv4", "conv5")


def test_a_mixed_precision_model_gets_float32_logits_for_its_losses_and_float32_averages():
    keras.mixed_precision.set_global_policy("mixed_float16")  # conftest resets it
    model = _sequential_cnn()
    robust = atalp_tf.RobustClassifier(model, method="pat", train_attack=ATTACK, ema_momentum=0.5)
    assert model.outputs[0].dtype == "float16" and robust.backbone.output["logits"].dtype == "float32"
    robust.compile(optimizer=keras.optimizers.SGD(0.01))
    x = np.random.default_rng(0).uniform(size=(8, 16, 16, 1)).astype("float32")
    history = robust.fit(x, np.arange(8) % 10, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(average.dtype == "float32" and np.isfinite(average.numpy()).all() for average in robust.averages)
    assert not np.allclose(robust.averages[0].numpy(), robust._averaged[0].numpy())



@pytest.mark.parametrize("frozen", [True, False])
def test_batch_norm_of_a_nested_backbone_moves_as_under_keras_own_fit(frozen):
    # The fine-tuning idiom (base.trainable = False): batch norm runs on its moving statistics.
    # In Keras 3.15 base(x, training=False) alone does not hold: fit's training=True overrides
    # it, for the user's model and the re-traced network alike.
    def moved(wrap):
        keras.utils.set_random_seed(8)
        base = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(8, 3, name="features"),
                                 keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU()])
        base.trainable = not frozen
        inputs = keras.Input((16, 16, 1))
        model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(
            base(inputs, training=False))))
        model = wrap(model)
        before = base.get_layer("bn").moving_mean.numpy().copy()
        x = np.random.default_rng(0).uniform(size=(16, 16, 16, 1)).astype("float32")
        model.fit(x, np.arange(16) % 10, epochs=1, verbose=0)
        return not np.allclose(base.get_layer("bn").moving_mean.numpy(), before)

    def keras_own(model):
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def robust(model):
        wrapped = atalp_tf.RobustClassifier(model, method="at", stages=["features"], train_attack=ATTACK)
        wrapped.compile(optimizer=keras.optimizers.SGD(0.01))
        return wrapped

    assert moved(keras_own) == moved(robust) == (not frozen)
