"""Attention maps and pairing losses against values worked out by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from atalp_tf import losses


def _features(values):
    """``[H][W][C]`` nested lists to a float32 ``[1, H, W, C]`` tensor."""
    return tf.constant([values], tf.float32)


def test_attention_map_is_normalised_channel_mean_of_squares():
    # Channel means of A^2 at the four positions: (1+1)/2=1, (4+0)/2=2, 0, (9+1)/2=5.
    features = _features([[[1, 1], [2, 0]], [[0, 0], [3, 1]]])
    expected = np.array([1, 2, 0, 5]) / math.sqrt(1 + 4 + 0 + 25)
    np.testing.assert_allclose(losses.attention_map(features)[0], expected, rtol=1e-6)


def test_attention_map_normalises_each_example_on_its_own():
    features = tf.concat([_features([[[1.0], [1.0]]]), _features([[[10.0], [0.0]]])], axis=0)
    maps = losses.attention_map(features).numpy()
    np.testing.assert_allclose(maps, [[1 / math.sqrt(2)] * 2, [1.0, 0.0]], rtol=1e-6)


def test_attention_pairing_sums_l2_distances_over_stages():
    # Stage 1: maps [1, 0] and [0, 1] are sqrt(2) apart. Stage 2: identical maps, 0 apart.
    # Stage 3: energies [1, 1] and [1, 0]: maps [1, 1]/sqrt(2) and [1, 0], distance
    # sqrt((1/sqrt2 - 1)^2 + 1/2) = sqrt(2 - sqrt(2)).
    clean = [_features([[[1.0], [0.0]]]), _features([[[2.0], [1.0]]]), _features([[[1.0], [1.0]]])]
    adv = [_features([[[0.0], [2.0]]]), _features([[[4.0], [2.0]]]), _features([[[1.0], [0.0]]])]
    expected = math.sqrt(2) + 0 + math.sqrt(2 - math.sqrt(2))
    np.testing.assert_allclose(losses.attention_pairing(clean, adv), [expected], rtol=1e-6)


def test_attention_pairing_has_zero_value_and_finite_gradient_for_equal_inputs():
    features = tf.Variable(tf.random.uniform((2, 4, 4, 3)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.attention_pairing([features], [features * 1.0]))
    gradient = tape.gradient(loss, features)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(gradient.numpy()))


def test_attention_pairing_rejects_mismatched_stage_lists():
    with pytest.raises(ValueError, match="same length"):
        losses.attention_pairing([_features([[[1.0]]])], [])


def test_logit_pairing_is_mean_squared_difference_over_classes():
    clean = tf.constant([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    adv = tf.constant([[1.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(losses.logit_pairing(clean, adv), [4 / 3, 1.0], rtol=1e-6)


def test_trades_kl_matches_hand_value_and_is_zero_for_equal_logits():
    clean = tf.constant([[0.0, 0.0], [0.3, -1.0]])
    adv = tf.constant([[math.log(3.0), 0.0], [0.3, -1.0]])
    # p = (1/2, 1/2), q = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
    np.testing.assert_allclose(
        losses.trades_kl(clean, adv), [0.5 * math.log(4 / 3), 0.0], rtol=1e-5, atol=1e-7
    )
