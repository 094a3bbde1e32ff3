"""FGSM with a random start, N-FGSM and free adversarial training, and the catastrophic-overfitting guard."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from atalp_tf import attacks
from atalp_tf import losses
from atalp_tf.attacks import PGDConfig
from atalp_tf.models import backbones
from atalp_tf.models.classifier import RobustClassifier
from atalp_tf.training.callbacks import CatastrophicOverfittingGuard

EPS = 0.1


def _model(method="at_alp", attack="pgd", step_size=EPS / 4, steps=3, replays=3, run_eagerly=False):
    keras.utils.set_random_seed(0)
    model = RobustClassifier(
        backbones.resnet18(10, (16, 16, 1), width=4), method=method, attack=attack,
        free_replays=replays, train_attack=attacks.PGDConfig(EPS, step_size, steps), seed=0,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=run_eagerly)
    return model


class _Recording(RobustClassifier):
    """Keeps every adversarial batch the training loss sees (run eagerly)."""

    def _per_example_losses(self, images, labels, adv_images, training):
        self.seen.append((np.asarray(images), np.asarray(adv_images)))
        return super()._per_example_losses(images, labels, adv_images, training)


def test_free_training_replays_each_batch_and_climbs_the_input_gradient(digits16):
    x, y, _, _ = digits16
    model = _Recording(
        backbones.resnet18(10, (16, 16, 1), width=4), method="at_alp", attack="free", free_replays=3,
        train_attack=attacks.PGDConfig(EPS, EPS / 2, 1), seed=0,
    )
    model.seen = []
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations.numpy()) == 2 * 3
    assert len(model.seen) == 2 * 3
    for replay in range(3):
        images, adv = model.seen[replay]
        np.testing.assert_array_equal(images, x[:32])
        assert np.abs(adv - images).max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    # From one replay to the next every pixel moves by the step (eps / 2) or stops at the
    # ball's or the pixel range's edge: a signed-gradient step, not a fresh random start.
    (_, before), (images, after) = model.seen[0], model.seen[1]
    moved = np.abs(after - before)
    at_edge = np.isclose(np.abs(after - images), EPS, atol=1e-5) | np.isin(after, (0.0, 1.0))
    assert np.all(np.isclose(moved, EPS / 2, atol=1e-5) | at_edge)
    assert np.mean(np.isclose(moved, EPS / 2, atol=1e-5)) > 0.3


def test_the_training_attack_is_one_value_made_once_and_saved_as_its_three_settings(tmp_path):
    from atalp_tf.attacks.training_attack import TrainingAttack

    value = TrainingAttack.make("free", EPS, replays=3)
    assert (value.config.step_size, value.config.steps, value.updates_per_batch) == (EPS, 1, 3)
    assert TrainingAttack.make("pgd", EPS, steps=5).run_config() == PGDConfig(EPS, EPS / 4, 5)
    assert TrainingAttack("fgsm_rs", PGDConfig(EPS, EPS, 3, random_start=False)).run_config() == PGDConfig(
        EPS, EPS, 1, random_start=True)
    backbone = backbones.resnet18(10, (16, 16, 1), width=4)
    given = RobustClassifier(backbone, method="pat", attack=value)
    loose = RobustClassifier(backbone, method="pat", attack="free", train_attack=value.config, free_replays=3)
    assert given.training_attack == loose.training_attack == value and given.updates_per_batch == 3
    assert {k: given.get_config()[k] for k in ("attack", "train_attack", "free_replays")} == {
        "attack": "free", "train_attack": value.config.to_dict(), "free_replays": 3}
    given.save(tmp_path / "free.keras")
    assert keras.saving.load_model(tmp_path / "free.keras").training_attack == value
    with pytest.raises(ValueError, match="holds its settings"):
        RobustClassifier(backbone, method="pat", attack=value, train_attack=value.config)
    with pytest.raises(ValueError, match="`attack` must be one of"):
        TrainingAttack("fgsm", value.config)


@pytest.mark.slow
def test_fgsm_rs_is_one_signed_step_from_a_random_start_that_raises_the_loss(standard_model, digits16):
    _, _, x_test, y_test = digits16
    x, y = tf.constant(x_test[:128]), tf.constant(y_test[:128])
    fast = RobustClassifier(
        standard_model.backbone, method="pat", attack="fgsm_rs",
        train_attack=attacks.PGDConfig(EPS / 2, 1.25 * EPS / 2, 7), seed=0,
    )
    adv = fast.adversarial_examples(x, y, fast.train_attack).numpy()
    assert np.abs(adv - x_test[:128]).max() <= EPS / 2 + 1e-6
    # A step of 1.25 eps from a uniform start stays inside the ball only where the start lay
    # more than eps / 4 on the other side: 3/8 of the pixels. Seven steps (the config's, which
    # FGSM-RS ignores) would put nearly all of them on the edge.
    on_edge = np.isclose(np.abs(adv - x_test[:128]), EPS / 2, atol=1e-5) | np.isin(adv, (0.0, 1.0))
    assert 0.55 < on_edge.mean() < 0.9
    noise = np.clip(x_test[:128] + np.random.default_rng(0).uniform(-EPS / 2, EPS / 2, x.shape), 0, 1)
    loss = lambda z: losses.cross_entropy(y, standard_model(z)).numpy().mean()  # noqa: E731
    assert loss(adv) > 2 * loss(noise)


def test_n_fgsm_is_one_step_of_eps_from_noise_of_twice_eps_never_projected_onto_the_ball():
    from atalp_tf.attacks import training_attack

    # A loss whose input gradient is known everywhere: the sum of w * x, gradient w.
    rng = np.random.default_rng(0)
    weights = tf.constant(rng.choice([-1.0, 1.0], size=(1, 8, 8, 1)), tf.float32)
    loss_fn = lambda z: tf.reduce_sum(weights * z, axis=[1, 2, 3])  # noqa: E731
    x = tf.fill([500, 8, 8, 1], 0.5)
    config = training_attack.TrainingAttack.make("n_fgsm", EPS).config
    assert config.step_size == pytest.approx(EPS) and config.steps == 1
    adv = training_attack.noisy_fgsm(lambda z: z, x, lambda logits: loss_fn(logits), config, seed=3).numpy()
    # By hand: adv = x + u + eps * sign(w), u uniform in [-2 eps, 2 eps] (x = 0.5 leaves the
    # pixel range untouched at eps 0.1).
    noise = adv - 0.5 - EPS * weights.numpy()
    assert noise.min() >= -2 * EPS - 1e-6 and noise.max() <= 2 * EPS + 1e-6
    assert noise.min() < -1.9 * EPS and noise.max() > 1.9 * EPS
    assert abs(noise.mean()) < 0.01 * EPS
    assert noise.std() == pytest.approx(2 * EPS / np.sqrt(3), rel=0.02)
    # No projection: where the noise lies more than eps out on the step's side (a quarter of
    # the pixels), the example ends beyond 2 eps from x, up to 3 eps.
    distance = np.abs(adv - 0.5)
    assert distance.max() > 2.9 * EPS and (distance > 2 * EPS).mean() == pytest.approx(0.25, abs=0.02)
    # The pixel range is the only limit.
    edge = training_attack.noisy_fgsm(lambda z: z, tf.fill([50, 8, 8, 1], 0.98), loss_fn, config, seed=4).numpy()
    assert edge.max() <= 1.0 and edge.min() >= 0.98 - 3 * EPS - 1e-6


@pytest.mark.slow
def test_n_fgsm_trains_a_classifier_and_keeps_its_kind_through_saving(digits16, tmp_path):
    x, y, _, _ = digits16
    model = _model(method="pat", attack="n_fgsm", step_size=EPS)
    history = model.fit(x[:256], y[:256], batch_size=64, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["ce"][-1] < history["ce"][0]
    adv = model.adversarial_examples(tf.constant(x[:64]), tf.constant(y[:64]), model.train_attack).numpy()
    assert np.abs(adv - x[:64]).max() > EPS * 1.5  # beyond the eps ball, as N-FGSM leaves it
    model.save(tmp_path / "n_fgsm.keras")
    assert keras.saving.load_model(tmp_path / "n_fgsm.keras").attack == "n_fgsm"


@pytest.mark.slow
def test_fgsm_rs_training_lowers_the_adversarial_loss(digits16):
    # Free training is checked to learn by its resume test in test_faults.
    x, y, _, _ = digits16
    model = _model(attack="fgsm_rs", step_size=1.25 * EPS)
    first = model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0).history
    later = model.fit(x[:256], y[:256], batch_size=64, epochs=3, verbose=0).history
    assert np.isfinite(later["loss"]).all()
    assert later["ce"][-1] < first["ce"][0]


def test_fast_attack_arguments_are_checked():
    backbone = backbones.resnet18(10, (16, 16, 1), width=4)
    config = attacks.PGDConfig(EPS, EPS, 1)
    with pytest.raises(ValueError, match="attack"):
        RobustClassifier(backbone, method="pat", attack="fgsm", train_attack=config)
    with pytest.raises(ValueError, match="standard"):
        RobustClassifier(backbone, method="standard", attack="free")
    with pytest.raises(ValueError, match="free_replays"):
        RobustClassifier(backbone, method="pat", attack="free", free_replays=0, train_attack=config)
    with pytest.warns(UserWarning, match="catastrophic"):
        risky = RobustClassifier(
            backbone, method="pat", attack="fgsm_rs", train_attack=attacks.PGDConfig(EPS, 2 * EPS, 1)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RobustClassifier(backbone, method="pat", attack="fgsm_rs", train_attack=attacks.PGDConfig(EPS, 1.25 * EPS, 1))
        # Loading a model is not a new choice of step: it warned once, when it was made.
        reloaded = RobustClassifier.from_config(risky.get_config())
    assert reloaded.train_attack.step_size == pytest.approx(2 * EPS)


class _Weights(keras.Model):
    def __init__(self):
        super().__init__()
        self.w = self.add_weight(shape=(), initializer="zeros")
        self.stop_training = False


def _run_guard(guard, values):
    model = _Weights()
    guard.set_model(model)
    for epoch, value in enumerate(values):
        model.w.assign(float(epoch))
        guard.on_epoch_end(epoch, {"val_pgd_accuracy": value})
        if model.stop_training:
            break
    return model


def test_guard_stops_on_collapse_and_puts_back_the_best_epoch():
    guard = CatastrophicOverfittingGuard()
    with pytest.warns(UserWarning, match="fell from 0.450 .epoch 2. to 0.100 .epoch 3."):
        model = _run_guard(guard, [0.40, 0.45, 0.10, 0.50])
    assert model.stop_training and float(model.w.numpy()) == 1.0
    assert guard.collapse == {
        "epoch": 3, "value": 0.10, "best": 0.45, "best_epoch": 2,
        "monitor": "val_pgd_accuracy", "action": "stop",
    }


def test_guard_warns_only_when_asked_and_ignores_small_or_noisy_drops():
    guard = CatastrophicOverfittingGuard(action="warn")
    with pytest.warns(UserWarning, match="Catastrophic"):
        model = _run_guard(guard, [0.40, 0.10, 0.50])
    assert not model.stop_training and float(model.w.numpy()) == 2.0 and guard.collapse["epoch"] == 2
    for values in ([0.40, 0.30, 0.35], [0.08, 0.02, 0.05]):  # a quarter down; tiny values
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            guard = CatastrophicOverfittingGuard()
            assert not _run_guard(guard, values).stop_training and guard.collapse is None


def test_guard_names_a_missing_monitor():
    guard = CatastrophicOverfittingGuard()
    guard.set_model(_Weights())
    with pytest.raises(ValueError, match="val_pgd_accuracy"):
        guard.on_epoch_end(0, {"val_clean_accuracy": 0.5})


class _CountingTraces(RobustClassifier):
    """Counts how often Keras traces the train step, by input shape (Python runs only then)."""

    def train_step(self, data):
        self.traces.append(tuple(data[0].shape))
        return super().train_step(data)


# fgsm_rs runs the pgd path with one step.
@pytest.mark.slow
@pytest.mark.parametrize("attack", ["pgd", "free"])
def test_one_trace_per_input_shape_over_epochs_and_no_host_calls(attack, digits16):
    x, y, _, _ = digits16
    model = _CountingTraces(
        backbones.resnet18(10, (16, 16, 1), width=2), method="at_alp", attack=attack,
        train_attack=attacks.PGDConfig(EPS, EPS / 4, 3), seed=0,
    )
    model.traces = []
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    # 40 images in batches of 16: two full batches and one of 8, for three epochs.
    data = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(16)
    model.fit(data, epochs=3, verbose=0, validation_data=data)
    shapes = {shape[0] for shape in model.traces}
    assert model.traces and len(model.traces) == len(shapes) <= 2, model.traces

    # The step's graph, loops included, holds no Python callbacks (host round-trips).
    step = tf.function(model.train_step).get_concrete_function(
        (tf.TensorSpec([16, 16, 16, 1], tf.float32), tf.TensorSpec([16], tf.int64))
    )
    graph = step.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    assert "While" in ops or "StatelessWhile" in ops or attack != "pgd"
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


@pytest.mark.slow
def test_validation_every_n_epochs_on_a_fixed_subset_with_its_own_cheaper_attack(tmp_path, monkeypatch):
    from atalp_tf.datasets import DataConfig
    from atalp_tf.models.classifier import RobustClassifier
    from atalp_tf.training import trainer
    from atalp_tf.training.config import TrainConfig

    config = TrainConfig.from_flat(
        model_dir=str(tmp_path / "run"), data=DataConfig(name="digits", batch_size=128),
        architecture="resnet18", width=2, train_attack=PGDConfig(0.1, 0.05, 1),
        eval_attack=PGDConfig(0.1, 0.025, 5), epochs=3, schedule="onecycle", learning_rate=0.05,
        val_steps=2, validate_every=2, val_examples=40, verbose=2, export=False,
    )
    lines, tested = [], []
    evaluate = trainer.evaluate

    def counted(*args):
        tested.append(evaluate(*args))
        return tested[-1]

    monkeypatch.setattr(trainer, "evaluate", counted)
    results = trainer.run(config, log=lines.append)
    epochs = [line for line in lines if line.startswith("epoch ")]
    # Validated after epoch 2 and at the last; not after epoch 1.
    assert [" | val " in line for line in epochs] == [False, True, True]
    assert results["best_epoch"] in (2, 3)
    # The best model is tested apart only when it is not the last one.
    assert results["best_is_last"] == (results["best_epoch"] == 3)
    assert len(tested) == (1 if results["best_is_last"] else 2)
    assert results["test_best"] == tested[-1] and results["test_last"] == tested[0]
    assert ("tested once" in "\n".join(trainer.summary(results))) == results["best_is_last"]
    # Validation attacked 40 examples with 2 steps; the saved model keeps the test attack.
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert isinstance(saved, RobustClassifier) and saved.eval_attack.steps == 5
    best = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "best.keras", compile=False)
    assert best.eval_attack.steps == 2
