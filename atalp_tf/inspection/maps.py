"""What a model attends to: per-stage attention maps, attention on object parts, loss landscapes.

These are the quantities behind the paper's pictures and Table 3. Everything here returns
arrays; ``atalp_tf.visualize`` turns them into PNG, CSV and JSON files.

* ``stage_attention``: for each stage conv2..conv5, Zagoruyko & Komodakis' map
  ``mean_c A^2`` reshaped to ``[H_j, W_j]`` and L2-normalised per image, the same map that the
  attention-pairing loss compares (``atalp_tf.losses.attention_map`` is its flattened form).
* ``part_activation`` (``part_shares`` over clean and adversarial images): the share of a
  stage's attention energy that falls inside a mask of the
  object's discriminative parts, ``sum(Q * m) / sum(Q)`` with ``Q = mean_c A^2`` and ``m`` the
  mask averaged onto the stage's grid (each cell holds the fraction of it the mask covers).
  A mask over the whole image gives 1; a map that ignores the mask gives its area share.
* ``loss_landscape``: cross-entropy at ``clip(x + a * sign(grad_x L) + b * r)`` on a grid of
  ``(a, b)``, ``r`` a Rademacher (random +-1) direction, as in the paper's Figure 6.
"""

import os

import numpy as np
import tensorflow as tf

from atalp_tf import losses
from atalp_tf.attacks import core
from atalp_tf.errors import MissingPath
from atalp_tf.models.classifier import network_of
from atalp_tf.models.classifier import stages_of


def load_image(path, shape):
    """An image (or mask) file as a model of input ``shape`` sees it: shorter side resized to
    the pipeline's load size, centre crop, [0, 1]; grayscale if ``shape[-1] == 1``."""
    from atalp_tf.datasets.images import read_resized
    from atalp_tf.datasets.pipeline import load_size

    size = shape[0]
    pixels = read_resized(path, load_size(size)).astype(np.float32) / 255.0
    top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
    pixels = pixels[top : top + size, left : left + size]
    return pixels.mean(-1, keepdims=True) if shape[-1] == 1 else pixels


def find_mask(image_path, mask_dir):
    """The mask in ``mask_dir`` named like ``image_path`` (any image extension)."""
    from atalp_tf.datasets.images import IMAGE_EXTENSIONS

    stem = os.path.splitext(os.path.basename(image_path))[0]
    for extension in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        candidate = os.path.join(mask_dir, stem + extension)
        if os.path.isfile(candidate):
            return candidate
    raise MissingPath(f"No mask for {image_path} in {mask_dir} (expected {stem}.png or similar)")


def load_mask(path, size):
    """A mask file at ``size`` x ``size`` as 0/1 (white, > 0.5, on the discriminative parts)."""
    return (load_image(path, (size, size, 1))[..., 0] > 0.5).astype(np.float32)


def stage_attention(model, images):
    """``{stage: [B, H_j, W_j]}`` attention maps, each L2-normalised per image."""
    outputs = network_of(model)(tf.convert_to_tensor(images, tf.float32), training=False)
    maps = {}
    for stage in stages_of(model):
        features = outputs[stage]
        flat = losses.attention_map(features)
        maps[stage] = tf.reshape(flat, tf.shape(features)[:3]).numpy()
    return maps


def _energy(features):
    return tf.reduce_mean(tf.square(tf.cast(features, tf.float32)), axis=-1)


def part_activation(model, images, masks):
    """``{stage: [B]}`` share of each image's attention energy inside its mask.

    Args:
        images: ``[B, H, W, C]`` pixels in [0, 1].
        masks: ``[B, H, W]`` in [0, 1] (1 on the discriminative parts), at the images' size.
    """
    masks = tf.convert_to_tensor(masks, tf.float32)[..., None]
    if masks.shape[1:3] != np.shape(images)[1:3]:
        raise ValueError(
            f"masks must have the images' height and width {np.shape(images)[1:3]}; "
            f"got {tuple(masks.shape[1:3])}"
        )
    outputs = network_of(model)(tf.convert_to_tensor(images, tf.float32), training=False)
    shares = {}
    for stage in stages_of(model):
        energy = _energy(outputs[stage])
        grid = energy.shape[1:3]
        # Area averaging: each grid cell gets the fraction of its pixels the mask covers.
        cover = tf.image.resize(masks, grid, method="area")[..., 0]
        inside = tf.reduce_sum(energy * cover, axis=[1, 2])
        total = tf.reduce_sum(energy, axis=[1, 2])
        shares[stage] = tf.math.divide_no_nan(inside, total).numpy()
    return shares


def part_shares(model, images, masks, labels, attack, batch_size=32):
    """``{stage: {"clean": share, "adv": share}}``: the mean share of attention inside the
    masks, on ``images`` and on ``attack(images, labels)`` (adversarial examples), in batches."""
    shares = {stage: {"clean": [], "adv": []} for stage in stages_of(model)}
    for start in range(0, len(images), batch_size):
        batch, truth = images[start : start + batch_size], labels[start : start + batch_size]
        for kind, pixels in (("clean", batch), ("adv", np.asarray(attack(batch, truth)))):
            for stage, values in part_activation(model, pixels, masks[start : start + batch_size]).items():
                shares[stage][kind].append(values)
    return {s: {k: float(np.concatenate(v).mean()) for k, v in kinds.items()} for s, kinds in shares.items()}


def loss_landscape(model, image, label, *, radius, steps=21, seed=0, pixel_range=(0.0, 1.0)):
    """Cross-entropy on a ``steps x steps`` grid around one image.

    Returns ``(offsets, losses)``: ``offsets`` the ``steps`` values of ``a`` (and of ``b``)
    from ``-radius`` to ``radius``; ``losses[i, j]`` the loss at ``a = offsets[i]`` along the
    sign of the input gradient and ``b = offsets[j]`` along a Rademacher direction. With an
    odd ``steps`` the centre is the unperturbed image.
    """
    lo, hi = pixel_range
    x = tf.convert_to_tensor(np.asarray(image, np.float32)[None])
    y = tf.constant([int(label)])
    logits_fn = lambda z: model(z, training=False)  # noqa: E731

    @tf.function  # eagerly, every convolution's filter gradient would be computed too
    def input_gradient(x):
        return core.input_gradient(logits_fn, x, lambda logits: losses.cross_entropy(y, logits)).gradient

    gradient_sign = tf.sign(input_gradient(x))
    rademacher = tf.constant(np.random.default_rng(seed).choice([-1.0, 1.0], size=x.shape), tf.float32)
    offsets = np.linspace(-radius, radius, steps).astype(np.float32)
    a, b = np.meshgrid(offsets, offsets, indexing="ij")
    points = tf.clip_by_value(
        x + a.reshape(-1, 1, 1, 1) * gradient_sign + b.reshape(-1, 1, 1, 1) * rademacher, lo, hi
    )
    values = []
    for start in range(0, points.shape[0], 256):
        batch = points[start : start + 256]
        labels = tf.fill([batch.shape[0]], y[0])
        values.append(losses.cross_entropy(labels, logits_fn(batch)).numpy())
    return offsets, np.concatenate(values).reshape(steps, steps)
