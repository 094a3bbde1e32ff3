"""Optimizers and learning-rate schedules for the trainer."""

import keras

from atalp_tf.choices import OPTIMIZERS
from atalp_tf.choices import SCHEDULES


@keras.saving.register_keras_serializable(package="atalp_tf")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from 0 up to ``peak`` over the first ``rise`` share of ``total_steps``, then
    linear down to 0 at the end: the cyclic schedule of Wong et al. 2020 ("Fast is better than
    free"), which rises over 2/5 of the run. Most of their speed-up over PGD training came from
    it and the few epochs it allows, not from a faster step."""

    def __init__(self, peak, total_steps, rise=0.4):
        if not peak > 0 or int(total_steps) != total_steps or total_steps < 1 or not 0 < rise < 1:
            raise ValueError(
                "`peak` must be positive, `total_steps` a positive integer and `rise` in (0, 1). "
                f"Received: peak={peak}, total_steps={total_steps}, rise={rise}"
            )
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.rise = float(rise)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        top = self.rise * self.total_steps
        up = step / top
        down = (self.total_steps - step) / (self.total_steps - top)
        return self.peak * keras.ops.clip(keras.ops.minimum(up, down), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "rise": self.rise}


def learning_rate_schedule(
    learning_rate, *, schedule, steps_per_epoch, epochs, boundaries=(), decay_factor=0.1
):
    """Per-step learning rate.

    Args:
        schedule: ``"cosine"`` (to 0 over the run), ``"step"`` (times ``decay_factor`` at each
            epoch in ``boundaries``, e.g. 75 and 90 for TRADES' 100-epoch CIFAR run),
            ``"onecycle"`` (``OneCycle``: up to the rate over 2/5 of the run, down to 0 at its end)
            or ``"constant"``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={schedule!r}")
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, steps_per_epoch * epochs)
    if schedule == "onecycle":
        return OneCycle(learning_rate, steps_per_epoch * epochs)
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
