"""Per-example losses, the one home of each: cross-entropy and the Carlini-Wagner margin (which
the attacks and the objectives both use), attention pairing, logit pairing and TRADES' KL term.

Every function returns one value per example (shape ``[B]``) so the model can reduce all terms
the same way, with ``tf.nn.compute_average_loss`` over the global batch; mixing these with a
``tf.reduce_mean`` would weigh them N times too much on N replicas.

Choices, written down because implementations differ:

* Attention map (Zagoruyko & Komodakis): the channel mean of ``A**2``, flattened and
  L2-normalised per example.
* Attention pairing is the *norm* (p=2) of the difference of the two maps, per example, summed
  over stages. Zagoruyko's own loss is the mean of the squared difference over H*W; a mean
  weighs a 7x7 stage ~64x more than a 56x56 one, and its beta (1e3) is not comparable to ours.
  Each stage's distance lies in [0, 2], so beta of order 1 balances it against cross-entropy.
* Logit pairing follows Kannan et al.'s released code, ``mean_squared_error(clean, adv)``: the
  mean over classes of the squared difference, so their weights (0.5; 0.25 for ImageNet)
  carry over unchanged. Summing over classes instead would multiply alpha by the class count.
* TRADES' term is ``KL(softmax(f(x)) || softmax(f(x_adv)))`` with gradients through both.
"""

import keras
import tensorflow as tf


def cross_entropy(labels, logits):
    """Per-example cross-entropy of integer labels."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def margin(labels, logits):
    """Per-example Carlini-Wagner margin ``max_{j != y} z_j - z_y``: positive when misclassified."""
    num_classes = tf.shape(logits)[-1]
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=logits.dtype)
    true_logit = tf.reduce_sum(one_hot * logits, axis=-1)
    # Push the true class far down so it cannot win the max over the others.
    other_best = tf.reduce_max(logits - one_hot * 1e9, axis=-1)
    return other_best - true_logit


def attention_map(features):
    """``[B, H, W, C]`` activations to ``[B, H*W]`` unit-norm attention maps."""
    energy = tf.reduce_mean(tf.square(tf.cast(features, tf.float32)), axis=-1)
    flat = tf.reshape(energy, [tf.shape(energy)[0], -1])
    return tf.math.l2_normalize(flat, axis=1)


def _safe_l2(v):
    # tf.norm has an infinite gradient at 0, and clean == adversarial is common (a step
    # that did not move, or an example already at the pixel bound); this one has 0 there.
    squared = tf.reduce_sum(tf.square(v), axis=1)
    positive = squared > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, squared, 1.0)), 0.0)


def attention_pairing(clean_features, adv_features):
    """Sum over stages of ``|| Q(clean)/|Q(clean)| - Q(adv)/|Q(adv)| ||_2``, per example."""
    if len(clean_features) != len(adv_features) or not clean_features:
        raise ValueError(
            "`clean_features` and `adv_features` must be non-empty and of the same length. "
            f"Received: {len(clean_features)} and {len(adv_features)} stages"
        )
    distances = [
        _safe_l2(attention_map(c) - attention_map(a))
        for c, a in zip(clean_features, adv_features)
    ]
    return tf.add_n(distances)


def logit_pairing(clean_logits, adv_logits):
    """Mean over classes of the squared logit difference, per example (Kannan et al.)."""
    diff = tf.cast(clean_logits, tf.float32) - tf.cast(adv_logits, tf.float32)
    return tf.reduce_mean(tf.square(diff), axis=-1)


def trades_kl(clean_logits, adv_logits):
    """``KL(softmax(clean) || softmax(adv))`` summed over classes, per example."""
    clean_log_p = tf.nn.log_softmax(tf.cast(clean_logits, tf.float32), axis=-1)
    adv_log_p = tf.nn.log_softmax(tf.cast(adv_logits, tf.float32), axis=-1)
    return tf.reduce_sum(tf.exp(clean_log_p) * (clean_log_p - adv_log_p), axis=-1)
