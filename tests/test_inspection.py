"""Attention maps per stage, part activation and the loss landscape."""

import numpy as np
import pytest
import tensorflow as tf

from atalp_tf import losses
from atalp_tf.inspection import maps as inspection
from atalp_tf.models import backbones
from atalp_tf.models.classifier import RobustClassifier


def test_stage_attention_shapes_and_unit_norm():
    model = RobustClassifier(backbones.resnet18(5, (32, 32, 3), width=4), method="standard")
    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype("float32")
    maps = inspection.stage_attention(model, images)
    assert {s: m.shape for s, m in maps.items()} == {
        "conv2": (3, 32, 32), "conv3": (3, 16, 16), "conv4": (3, 8, 8), "conv5": (3, 4, 4)
    }
    for stage_maps in maps.values():
        np.testing.assert_allclose(np.linalg.norm(stage_maps.reshape(3, -1), axis=1), 1.0, rtol=1e-5)
        assert stage_maps.min() >= 0


class _FixedFeatures:
    """A stand-in backbone whose every stage has the same 2x2 energy map [[1, 3], [1, 3]]."""

    def __call__(self, images, training=False):
        batch = tf.shape(images)[0]
        # One channel: energy = A^2, so A = sqrt(energy).
        grid = tf.sqrt(tf.constant([[1.0, 3.0], [1.0, 3.0]]))[None, :, :, None]
        features = tf.tile(grid, [batch, 1, 1, 1])
        return {stage: features for stage in backbones.STAGES}


class _Model:
    backbone = _FixedFeatures()


def test_part_activation_is_one_for_a_full_mask_and_a_share_for_a_half_mask():
    images = np.zeros((2, 4, 4, 3), "float32")
    full = inspection.part_activation(_Model(), images, np.ones((2, 4, 4)))
    for shares in full.values():
        np.testing.assert_allclose(shares, 1.0)
    left = np.zeros((2, 4, 4))
    left[:, :, :2] = 1.0  # the left column of the 2x2 grid: energy 1 + 1 of 1 + 3 + 1 + 3
    half = inspection.part_activation(_Model(), images, left)
    for shares in half.values():
        np.testing.assert_allclose(shares, 2 / 8)
    with pytest.raises(ValueError, match="height and width"):
        inspection.part_activation(_Model(), images, np.ones((2, 8, 8)))


def test_part_activation_on_a_real_network_is_a_share(standard_model, digits16):
    _, _, x, _ = digits16
    masks = np.zeros(x.shape[:3])
    masks[:, :8, :] = 1.0
    shares = inspection.part_activation(standard_model, x[:8], masks[:8])
    for values in shares.values():
        assert np.all((values >= 0) & (values <= 1))


def test_landscape_centre_is_the_loss_at_the_input(standard_model, digits16):
    _, _, x, y = digits16
    offsets, surface = inspection.loss_landscape(standard_model, x[0], y[0], radius=0.1, steps=5)
    assert surface.shape == (5, 5) and offsets[2] == 0.0
    expected = losses.cross_entropy(y[:1], standard_model(x[:1], training=False)).numpy()[0]
    assert surface[2, 2] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # Along the gradient sign the loss rises faster than along a random direction.
    assert surface[4, 2] > surface[2, 4]
