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
