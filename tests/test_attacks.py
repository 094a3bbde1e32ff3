"""PGD and FGSM: they respect their budget and they hurt a standard model in the right order."""

import numpy as np
import pytest
import tensorflow as tf

from atalp_tf import attacks
from atalp_tf import losses
from atalp_tf.attacks import PGDConfig


def _accuracy(model, images, labels):
    return float(np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels))


def _logits_fn(model):
    return lambda x: model(x, training=False)


def _attack(model, images, labels, config, seed=0):
    return attacks.compile_attack(_logits_fn(model), config, seed=seed)(images, labels).numpy()


def _attacked_accuracy(model, images, labels, config, seed=0):
    return _accuracy(model, _attack(model, images, labels, config, seed), labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=-1, step_size=0.1, steps=1), "Received: eps=-1"),
        (dict(eps=0.1, step_size=0, steps=1), "Received: step_size=0"),
        (dict(eps=0.1, step_size=0.1, steps=0), "Received: steps=0"),
        (dict(eps=0.1, step_size=0.1, steps=1, norm="l1"), "Received: norm='l1'"),
        (dict(eps=0.1, step_size=0.1, steps=1, loss="kl"), "Received: loss='kl'"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PGDConfig(**kwargs)


def test_margin_is_best_other_logit_minus_true_logit():
    logits = tf.constant([[1.0, 5.0, 2.0], [4.0, 0.0, 1.0]])
    np.testing.assert_allclose(losses.margin(tf.constant([1, 1]), logits), [-3.0, 4.0])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_eps_ball_and_pixel_range(standard_model, digits16, norm):
    _, _, x, y = digits16
    x = x[:64]
    eps = 0.1 if norm == "linf" else 1.0
    config = PGDConfig(eps=eps, step_size=eps / 2, steps=5, norm=norm)
    x_adv = _attack(standard_model, x, y[:64], config, seed=1)
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps * (1 + 1e-5)
    # The perturbation is used: most examples end near the boundary of the ball.
    assert np.median(size) > 0.9 * eps
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    # Digits have many pixels at 0 and 1, so clipping to the range is exercised.
    assert np.mean(x == 0.0) > 0.3


def test_fgsm_is_one_full_step_without_random_start():
    config = PGDConfig.fgsm(0.1)
    assert (config.steps, config.step_size, config.random_start) == (1, 0.1, False)


def test_pgd_beats_fgsm_beats_random_noise_on_standard_model(standard_model, digits16):
    _, _, x, y = digits16
    eps = 0.05
    clean = _accuracy(standard_model, x, y)
    rng = np.random.default_rng(0)
    noisy = np.clip(x + eps * rng.choice([-1.0, 1.0], size=x.shape), 0, 1).astype("float32")
    noise = _accuracy(standard_model, noisy, y)
    fgsm = _attacked_accuracy(standard_model, x, y, PGDConfig.fgsm(eps))
    pgd = _attacked_accuracy(standard_model, x, y, PGDConfig(eps, eps / 4, 10))
    assert noise > clean - 0.05, (clean, noise)
    assert fgsm < noise - 0.1, (noise, fgsm)
    assert pgd < fgsm - 0.05, (fgsm, pgd)


def test_targeted_pgd_reaches_the_target_more_often_than_untargeted(standard_model, digits16):
    _, _, x, y = digits16
    x, y = x[:128], y[:128]
    target = (y + 1) % 10
    targeted = _attack(standard_model, x, target, PGDConfig(0.1, 0.025, 10, targeted=True))
    untargeted = _attack(standard_model, x, y, PGDConfig(0.1, 0.025, 10))
    hit_targeted = _accuracy(standard_model, targeted, target)
    hit_untargeted = _accuracy(standard_model, untargeted, target)
    assert hit_targeted > hit_untargeted + 0.2, (hit_targeted, hit_untargeted)


def test_margin_loss_attack_is_about_as_strong_as_cross_entropy(standard_model, digits16):
    _, _, x, y = digits16
    ce = _attacked_accuracy(standard_model, x, y, PGDConfig(0.05, 0.0125, 10))
    cw = _attacked_accuracy(standard_model, x, y, PGDConfig(0.05, 0.0125, 10, loss="margin"))
    clean = _accuracy(standard_model, x, y)
    assert cw < clean - 0.3 and abs(cw - ce) < 0.15, (clean, ce, cw)


def test_attack_leaves_batch_norm_statistics_alone(standard_model, digits16):
    _, _, x, y = digits16
    moving = [v for v in standard_model.non_trainable_variables if "moving_" in v.path]
    # Stem, two per block, and the projection shortcuts of conv3..conv5: 20 batch norms.
    assert len(moving) == 2 * 20
    before = [v.numpy().copy() for v in moving]
    config = PGDConfig(0.1, 0.05, 3)
    _attack(standard_model, x[:32], y[:32], config)
    tf.function(standard_model.adversarial_examples)(x[:32], y[:32], config)
    for old, new in zip(before, moving):
        np.testing.assert_array_equal(old, new.numpy())


def test_same_seed_gives_same_examples(standard_model, digits16):
    _, _, x, y = digits16
    config = PGDConfig(0.1, 0.025, 3)
    runs = [_attack(standard_model, x[:16], y[:16], config, seed=7) for _ in range(2)]
    np.testing.assert_array_equal(*runs)
    other = _attack(standard_model, x[:16], y[:16], config, seed=8)
    assert not np.array_equal(runs[0], other)
