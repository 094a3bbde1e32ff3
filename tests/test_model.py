"""RobustClassifier: every method trains, the loss is what it says, and it survives distribution
and a save/load round trip."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from atalp_tf.attacks import PGDConfig
from atalp_tf.choices import METHODS
from atalp_tf.models import backbones
from atalp_tf.models.classifier import RobustClassifier

ATTACK = PGDConfig(eps=0.1, step_size=0.05, steps=2, random_start=False)


def _classifier(method, synchronized_bn=False, **kwargs):
    keras.utils.set_random_seed(1)
    backbone = backbones.resnet18(10, (16, 16, 1), width=4, synchronized_bn=synchronized_bn)
    train_attack = None if method == "standard" else ATTACK
    return RobustClassifier(backbone, method=method, train_attack=train_attack, seed=3, **kwargs)


def _batch(digits16, size=32):
    x, y, _, _ = digits16
    return x[:size], y[:size]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_train_steps_move_weights_and_lower_loss(method, digits16):
    model = _classifier(method)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    x, y = _batch(digits16)
    before = [w.numpy().copy() for w in model.trainable_weights]
    losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(6)]
    moved = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(moved), f"{moved.count(False)} of {len(moved)} weights did not change"
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, terms",
    [
        ("standard", {"ce"}),
        ("pat", {"ce"}),
        ("alp", {"ce", "logit_pairing"}),
        ("at", {"ce", "attention_pairing"}),
        ("at_alp", {"ce", "logit_pairing", "attention_pairing"}),
        ("trades", {"ce", "trades_kl"}),
    ],
)
def test_loss_is_the_weighted_sum_of_the_method_terms(method, terms, digits16):
    weights = {"ce": 1.0, "logit_pairing": 0.7, "attention_pairing": 2.5, "trades_kl": 4.0}
    model = _classifier(method, alpha=0.7, beta=2.5, trades_beta=4.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = model.train_on_batch(*_batch(digits16), return_dict=True)
    present = set(logs) & set(weights)
    assert present == terms
    expected = sum(weights[t] * logs[t] for t in terms)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    for term in terms - {"ce"}:
        assert logs[term] > 0, f"{term} should be positive once x_adv differs from x"


def test_constructor_rejects_bad_arguments():
    backbone = backbones.resnet18(10, (16, 16, 1), width=4)
    with pytest.raises(ValueError, match="Received: method='foo'"):
        RobustClassifier(backbone, method="foo")
    with pytest.raises(ValueError, match="Received: alpha=-1"):
        RobustClassifier(backbone, method="alp", alpha=-1, train_attack=ATTACK)
    with pytest.raises(ValueError, match="pass `train_attack`"):
        RobustClassifier(backbone, method="pat")
    plain = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3, name="features"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match=r"Pass `stages=\[layer names\]`.*\['features'\]"):
        RobustClassifier(plain, method="at_alp", train_attack=ATTACK)
    with pytest.raises(ValueError, match=r"names \['nope'\], which are not layers.*\['features'\]"):
        RobustClassifier(plain, method="at", train_attack=ATTACK, stages=["nope"])
    with pytest.raises(ValueError, match="ends in a softmax"):
        RobustClassifier(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]),
                         method="standard")
    with pytest.raises(ValueError, match="must be built on an input"):
        RobustClassifier(keras.Sequential([keras.layers.Dense(3)]), method="standard")


def test_test_step_reports_clean_and_pgd_accuracy(standard_model, digits16):
    _, _, x, y = digits16
    standard_model.eval_attack = PGDConfig(0.1, 0.025, 10)
    try:
        results = standard_model.evaluate(x[:128], y[:128], verbose=0, return_dict=True)
    finally:
        standard_model.eval_attack = None
    assert results["clean_accuracy"] > 0.9
    assert results["pgd_accuracy"] < results["clean_accuracy"] - 0.3


def _one_step(strategy, weights, x, y, method="at_alp"):
    with strategy.scope():
        model = _classifier(method, synchronized_bn=True)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return history.history, [w.numpy() for w in model.trainable_weights]


# TRADES is left out: its attack starts at x + 0.001 * N(0, 1) whatever the config says, so
# splitting the batch draws different noise. at_alp covers every term that TRADES scales.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["at_alp", "pat"])
def test_one_device_and_two_replicas_give_the_same_loss_and_update(method, digits16, mirrored):
    x, y = _batch(digits16, 16)
    weights = _classifier(method, synchronized_bn=True).get_weights()
    single_logs, single_weights = _one_step(tf.distribute.get_strategy(), weights, x, y, method)
    assert mirrored.num_replicas_in_sync == 2
    mirrored_logs, mirrored_weights = _one_step(mirrored, weights, x, y, method)
    for name in single_logs:
        assert mirrored_logs[name][0] == pytest.approx(single_logs[name][0], rel=1e-4), name
    # The update is where a per-replica mean (instead of a global one) would show: it would
    # double every gradient on two replicas.
    for a, b in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_keras_file_round_trip_keeps_logits_and_config(tmp_path, digits16):
    model = _classifier("at_alp", alpha=0.3, beta=2.0)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    x, y = _batch(digits16)
    model.train_on_batch(x, y)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, RobustClassifier)
    assert (restored.method, restored.alpha, restored.beta) == ("at_alp", 0.3, 2.0)
    assert restored.train_attack == ATTACK and restored.eval_attack == ATTACK
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # The weights read back exactly, and one value one float step away is told apart.
    assert restored.holds_weights_of(model)
    kernel = restored.backbone.trainable_weights[0]
    values = kernel.numpy()
    values.flat[0] = np.nextafter(values.flat[0], np.inf)
    kernel.assign(values)
    assert not restored.holds_weights_of(model)


@pytest.mark.slow
def test_mixed_float16_step_scales_the_loss_and_keeps_attack_gradients(digits16):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _classifier("at_alp")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = _batch(digits16)
    logits = model(x[:4])
    assert logits.dtype == "float32"  # the head stays float32 under the policy
    before = [w.numpy().copy() for w in model.trainable_weights]
    # Dynamic loss scaling starts at 2^15 and skips (and halves the scale on) a step whose
    # scaled gradients overflow, so allow a few steps.
    losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(4)]
    assert np.all(np.isfinite(losses))
    moved = sum(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    assert moved == len(before)
    # The attack must still move every example: its gradient may not underflow in float16.
    x_adv = tf.function(model.adversarial_examples)(x, y, ATTACK).numpy()
    moved_examples = np.abs(x_adv - x).reshape(len(x), -1).max(1) > 0
    assert moved_examples.all(), f"{(~moved_examples).sum()} examples got a zero attack gradient"


@pytest.mark.slow
def test_clean_ce_weight_mixes_clean_and_adversarial_cross_entropy_as_kannan(digits16):
    model = _classifier("alp", alpha=0.7, clean_ce_weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = _batch(digits16)
    start = model.get_weights()
    # By hand: the same (deterministic) attack, both halves through the network as one batch
    # (which moves batch norm's statistics, so the step starts again from `start`).
    adv = tf.function(model.adversarial_examples)(x, y, ATTACK)
    logits = model.backbone(tf.concat([x, adv], axis=0), training=True)["logits"]
    model.set_weights(start)
    clean, attacked = np.split(logits.numpy(), 2)
    ce = lambda z: keras.losses.sparse_categorical_crossentropy(y, z, from_logits=True).numpy()  # noqa: E731
    pairing = np.mean((clean - attacked) ** 2, axis=-1)
    expected = np.mean(0.5 * ce(clean) + 0.5 * ce(attacked) + 0.7 * pairing)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    # And it differs from the adversarial-only reading by the clean half's share.
    assert abs(expected - np.mean(ce(attacked) + 0.7 * pairing)) > 1e-3
    with pytest.raises(ValueError, match="clean_ce_weight"):
        _classifier("pat", clean_ce_weight=0.5)


def _moving_means(model):
    return [v.numpy().copy() for v in model.non_trainable_variables if v.path.endswith("moving_mean")]


@pytest.mark.slow
def test_separate_batch_norm_normalises_each_half_alone_and_averages_their_updates(digits16):
    model = _classifier("at_alp", bn_batches="separate")
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = _batch(digits16)
    adv = tf.function(model.adversarial_examples)(x, y, ATTACK)
    start = model.get_weights()
    updates = {}
    for name, batch in (("clean", x), ("adv", adv), ("joint", tf.concat([x, adv], axis=0))):
        model.set_weights(start)
        model.backbone(batch, training=True)
        updates[name] = _moving_means(model)
    model.set_weights(start)
    model.train_on_batch(x, y)
    after = _moving_means(model)
    for got, clean, attacked in zip(after, updates["clean"], updates["adv"]):
        np.testing.assert_allclose(got, (clean + attacked) / 2, rtol=1e-5, atol=1e-6)
    # Past the first layer, normalising the halves apart changes what later layers see: the
    # statistics of the concatenation differ.
    assert not np.allclose(after[-1], updates["joint"][-1], atol=1e-5)
    assert _classifier("trades").bn_batches == "separate" and _classifier("alp").bn_batches == "joint"


def test_coupled_weight_decay_goes_through_momentum_like_pytorch_sgd(digits16):
    lr, momentum, decay = 0.05, 0.9, 5e-3
    model = _classifier("standard", weight_decay=decay)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum))
    x, y = _batch(digits16)
    weights = [w.numpy().copy() for w in model.trainable_weights]
    velocity = [np.zeros_like(w) for w in weights]
    for _ in range(3):
        with tf.GradientTape() as tape:
            logits = model.backbone(x, training=True)["logits"]
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
        for i, (w, g) in enumerate(zip(weights, grads)):
            # PyTorch: v = mu v + (g + wd w); w -= lr v.
            velocity[i] = momentum * velocity[i] + g + decay * w
            weights[i] = w - lr * velocity[i]
        model.train_on_batch(x, y)
        for expected, got in zip(weights, model.trainable_weights):
            np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4, atol=2e-6)
