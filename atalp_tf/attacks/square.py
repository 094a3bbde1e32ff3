"""Square attack (Andriushchenko et al., ECCV 2020), L-inf: random search that uses only scores.

It never looks at a gradient, so a defence that hides or breaks its gradients does not slow
it down: when Square beats the gradient attacks, the gradients were misleading them.

Start from vertical stripes of +-eps. At each query, pick a square window per example
(its side shrinks on the schedule of the paper, from ``p_init`` of the image's area), give it
a fresh +-eps per channel, and keep the change if the margin ``z_y - max_{i != y} z_i`` fell.
Examples already misclassified stop changing. One forward pass per query (under a
``core.EOT`` wrapper, the expected logits over its draws, so one lucky draw cannot stop an
example); the randomness is stateless, seeded by ``core.draw_seed(seed)`` and the query, so a
seed gives the same result on every run.
"""

import tensorflow as tf

from atalp_tf import losses
from atalp_tf.attacks import core

# Query counts (scaled to a 10,000-query budget) after which the window's area halves again.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_share(p_init, query, queries):
    """Share of the image area the window covers at ``query`` out of ``queries``."""
    scaled = tf.cast(query, tf.float32) * (10000.0 / queries)
    halvings = tf.reduce_sum(tf.cast(scaled > tf.constant(_HALVINGS, tf.float32), tf.float32))
    return p_init / tf.pow(2.0, halvings)


def _margin(logits_fn, images, labels):
    """``z_y - max_{i != y} z_i``: negative once the example is misclassified."""
    return -losses.margin(labels, core.expected_logits(logits_fn, images))


def square(logits_fn, x, labels, *, eps, queries, p_init=0.8, pixel_range=(0.0, 1.0), seed=0):
    """Adversarial examples within ``eps`` (L-inf) found with ``queries`` forward passes.

    ``seed``: int, ``keras.random.SeedGenerator`` or None (``core.draw_seed``)."""
    lo, hi = pixel_range
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int32)
    batch, height, width = (tf.shape(x)[i] for i in range(3))
    channels = x.shape[-1]  # static, so the loop's tensors keep their shape
    seed = core.draw_seed(seed)

    def uniform(shape, query, stream):
        # Separate streams for the window's corner and its signs, at every query.
        return tf.random.stateless_uniform(shape, seed=tf.stack([seed[0], seed[1] + query * 2 + stream]))

    def signs(shape, query):
        return tf.where(uniform(shape, query, 0) < 0.5, -1.0, 1.0)

    x_adv = tf.clip_by_value(x + eps * signs([batch, 1, width, channels], 0), lo, hi)
    margin = _margin(logits_fn, x_adv, labels)

    def body(query, x_adv, margin):
        share = window_share(p_init, query, queries)
        area = tf.cast(height * width, tf.float32)
        side = tf.cast(tf.round(tf.sqrt(share * area)), tf.int32)
        side = tf.clip_by_value(side, 1, tf.minimum(height, width) - 1)
        corner = uniform([batch, 2], query, 1)
        top = tf.cast(corner[:, 0] * tf.cast(height - side + 1, tf.float32), tf.int32)
        left = tf.cast(corner[:, 1] * tf.cast(width - side + 1, tf.float32), tf.int32)
        rows = tf.range(height)[None, :]
        cols = tf.range(width)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + side)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + side)[:, None])
        window = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]
        fresh = tf.clip_by_value(x + eps * signs([batch, 1, 1, channels], query), lo, hi)
        candidate = tf.where(window, fresh, x_adv)
        new_margin = _margin(logits_fn, candidate, labels)
        keep = (new_margin < margin) & (margin > 0)
        x_adv = tf.where(keep[:, None, None, None], candidate, x_adv)
        return query + 1, x_adv, tf.where(keep, new_margin, margin)

    _, x_adv, _ = tf.while_loop(
        lambda q, *_: q < queries, body, (tf.constant(1), x_adv, margin), parallel_iterations=1
    )
    return x_adv


def run(logits_fn, x, labels, *, eps, budget, seed=None, pixel_range=(0.0, 1.0)):
    """The evaluation's entry point: Square with ``budget`` queries. Returns ``(x_adv, {})``."""
    return square(logits_fn, x, labels, eps=eps, queries=budget, pixel_range=pixel_range, seed=seed), {}


def cost(budget, num_classes, **options):
    """``(gradient passes, forward passes)`` of one ``run``: the start and one per later query
    (the loop runs every query, whatever it finds)."""
    return 0, budget
