"""Learning-rate schedules and weight decay."""

import keras
import numpy as np
import pytest

from atalp_tf import optimizers as optimization


def test_step_schedule_decays_at_the_given_epochs():
    schedule = optimization.learning_rate_schedule(
        0.1, schedule="step", steps_per_epoch=10, epochs=200, boundaries=(100, 150), decay_factor=0.1
    )
    rates = [float(schedule(step)) for step in (0, 999, 1001, 1499, 1501)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_cosine_schedule_ends_at_zero():
    schedule = optimization.learning_rate_schedule(0.1, schedule="cosine", steps_per_epoch=10, epochs=5)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(25)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-7)


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="needs the epochs"):
        optimization.learning_rate_schedule(0.1, schedule="step", steps_per_epoch=1, epochs=1)
    with pytest.raises(ValueError, match="Received: schedule='linear'"):
        optimization.learning_rate_schedule(0.1, schedule="linear", steps_per_epoch=1, epochs=1)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_spares_batch_norm_and_biases(name):
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(2, kernel_initializer="ones", bias_initializer="ones"),
        keras.layers.BatchNormalization(),
    ])
    optimizer = optimization.build_optimizer(name, 0.1, weight_decay=0.5)
    zero = [np.zeros_like(v.numpy()) for v in model.trainable_variables]
    optimizer.apply(zero, model.trainable_variables)
    values = {v.path: v.numpy() for v in model.trainable_variables}
    kernel = next(v for p, v in values.items() if p.endswith("kernel"))
    np.testing.assert_allclose(kernel, 1 - 0.1 * 0.5)  # decoupled: w -= lr * wd * w
    for path, value in values.items():
        if not path.endswith("kernel"):
            assert np.allclose(value, 1.0) or np.allclose(value, 0.0), path  # untouched


def test_one_cycle_rises_to_its_peak_over_two_fifths_and_falls_to_zero_and_round_trips():
    schedule = optimization.learning_rate_schedule(0.2, schedule="onecycle", steps_per_epoch=10, epochs=10)
    values = [float(schedule(step)) for step in (0, 20, 40, 70, 100)]
    np.testing.assert_allclose(values, [0.0, 0.1, 0.2, 0.1, 0.0], atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, optimization.OneCycle) and restored.get_config() == schedule.get_config()
    # Inside an optimizer saved with a model, it comes back too.
    optimizer = keras.optimizers.SGD(schedule)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert float(again.learning_rate) == 0.0 and isinstance(again._learning_rate, optimization.OneCycle)


@pytest.mark.slow
def test_weight_averaging_matches_a_hand_computed_average_over_three_steps():
    from atalp_tf.models import backbones
    from atalp_tf.models.classifier import RobustClassifier

    keras.utils.set_random_seed(0)
    model = RobustClassifier(backbones.resnet18(3, (8, 8, 1), width=2), method="standard", ema_momentum=0.9)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    averaged = model._averaged
    moving = {id(v) for layer in model.backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
              for v in (layer.moving_mean, layer.moving_variance)}
    assert len(averaged) == len(model.trainable_variables) + len(moving)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([v.numpy().copy() for v in averaged])

    x = np.random.default_rng(0).uniform(size=(12, 8, 8, 1)).astype("float32")
    model.fit(x, np.arange(12) % 3, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    assert len(seen) == 3
    # By hand: the first step copies, then a = 0.9 a + 0.1 w, for the weights and the statistics.
    expected = [0.9 * (0.9 * w1 + 0.1 * w2) + 0.1 * w3 for w1, w2, w3 in zip(*seen)]
    for average, value in zip(model.averages, expected):
        np.testing.assert_allclose(average.numpy(), value, rtol=1e-5, atol=1e-7)
    # The block evaluates the averaged weights and statistics, then puts the model's own back.
    own = [v.numpy().copy() for v in averaged]
    with model.averaged_weights():
        for variable, value in zip(averaged, expected):
            np.testing.assert_allclose(variable.numpy(), value, rtol=1e-5, atol=1e-7)
    for variable, value in zip(averaged, own):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.slow
def test_validation_and_the_saved_model_use_the_averaged_weights(tmp_path):
    from atalp_tf.models import backbones
    from atalp_tf.models.classifier import RobustClassifier
    from atalp_tf.runs.loading import load_classifier
    from atalp_tf.training import callbacks as watch

    keras.utils.set_random_seed(1)
    model = RobustClassifier(backbones.resnet18(3, (8, 8, 1), width=2), method="standard", ema_momentum=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    statistics = next(layer for layer in model.backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    during = {}

    class Look(keras.callbacks.Callback):
        def on_test_batch_begin(self, batch, logs=None):
            during["mean"] = statistics.moving_mean.numpy().copy()

    x = np.random.default_rng(1).uniform(size=(16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 3
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y),
              callbacks=[watch.ValidateAveraged(), Look(), watch.SaveModel(str(tmp_path / "last.keras"))])
    index = next(i for i, variable in enumerate(model._averaged) if variable is statistics.moving_mean)
    # Validated with the averaged statistics, which differ from the last step's.
    np.testing.assert_allclose(during["mean"], model.averages[index].numpy(), rtol=1e-6)
    assert not np.allclose(statistics.moving_mean.numpy(), model.averages[index].numpy())
    saved = load_classifier(str(tmp_path / "last.keras"))
    assert saved.ema_momentum == 0.5
    np.testing.assert_allclose(saved.backbone.get_layer(statistics.name).moving_mean.numpy(),
                               model.averages[index].numpy(), rtol=1e-6)


@pytest.mark.slow
def test_weight_averaging_on_two_replicas_equals_one_device(mirrored):
    import tensorflow as tf

    from atalp_tf.models import backbones
    from atalp_tf.models.classifier import RobustClassifier

    x = np.random.default_rng(2).uniform(size=(16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 3
    keras.utils.set_random_seed(2)
    weights = backbones.resnet18(3, (8, 8, 1), width=2, synchronized_bn=True).get_weights()
    averages = []
    for strategy in (tf.distribute.get_strategy(), mirrored):
        with strategy.scope():
            network = backbones.resnet18(3, (8, 8, 1), width=2, synchronized_bn=True)
            network.set_weights(weights)
            model = RobustClassifier(network, method="standard", ema_momentum=0.5)
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0, shuffle=False)
        averages.append([a.numpy() for a in model.averages])
    for one, two in zip(*averages):
        np.testing.assert_allclose(one, two, rtol=1e-3, atol=1e-5)
