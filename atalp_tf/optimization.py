"""Optimizers and learning-rate schedules for the trainer."""

import keras

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


def learning_rate_schedule(
    learning_rate, *, schedule, steps_per_epoch, epochs, boundaries=(), decay_factor=0.1
):
    """Per-step learning rate.

    Args:
        schedule: ``"cosine"`` (to 0 over the run), ``"step"`` (times ``decay_factor`` at each
            epoch in ``boundaries``, e.g. 100 and 150 for the usual 200-epoch CIFAR run) or
            ``"constant"``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={schedule!r}")
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, steps_per_epoch * epochs)
    if not boundaries:
        raise ValueError("The 'step' schedule needs the epochs at which to decay (`boundaries`)")
    if list(boundaries) != sorted(boundaries) or boundaries[0] <= 0:
        raise ValueError(f"`boundaries` must be increasing positive epochs. Received: {list(boundaries)}")
    values = [learning_rate * decay_factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(b) * steps_per_epoch for b in boundaries], values
    )


def build_optimizer(name, learning_rate, *, weight_decay=0.0, momentum=0.9):
    """SGD with Nesterov-free momentum, or AdamW; both with decoupled weight decay.

    Keras applies weight decay as ``w -= lr * weight_decay * w`` each step (decoupled, as in
    AdamW), not as an L2 term in the loss. Batch-norm scales and offsets and biases are left
    undecayed. The PyTorch recipes' coupled L2 decay is a loss term instead
    (``RobustClassifier(weight_decay=...)``): with momentum 0.9 the same number decays about
    ten times more there, since its gradient accumulates in the momentum.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}. Received: optimizer={name!r}")
    if name == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=momentum, weight_decay=weight_decay or None
        )
    else:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer
