"""A watch for catastrophic overfitting, the failure of single-step adversarial training.

FGSM and free adversarial training can, within an epoch, learn to defeat their own weak
attack while robust accuracy against PGD falls to near zero (Wong et al. 2020, Sec. 5). It
does not come back. The guard reads the validation PGD accuracy that ``RobustClassifier``'s
``test_step`` reports after every epoch (a held-out set, attacked with multi-step PGD) and
calls a collapse when it falls below ``1 - max_drop`` of its best so far, by at least
``min_drop`` (so noise on a small validation set at low accuracy does not trigger it).

It looks only at validated epochs (``--validate_every`` may skip some). On a collapse,
``action="stop"`` puts back the weights of the best epoch and stops training;
``action="warn"`` only warns. Either way ``collapse`` describes what happened.
"""

import warnings

import keras

from atalp_tf.errors import Advice

ACTIONS = ("stop", "warn")


class CatastrophicOverfittingGuard(keras.callbacks.Callback):
    def __init__(self, monitor="val_pgd_accuracy", action="stop", max_drop=0.5, min_drop=0.1):
        super().__init__()
        if action not in ACTIONS:
            raise ValueError(f"`action` must be one of {ACTIONS}. Received: action={action!r}")
        if not 0 < max_drop < 1:
            raise ValueError(f"`max_drop` must be in (0, 1). Received: max_drop={max_drop}")
        self.monitor = monitor
        self.action = action
        self.max_drop = max_drop
        self.min_drop = min_drop
        self.best = None
        self.best_epoch = None
        self.best_weights = None
        self.collapse = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            if any(key.startswith("val_") for key in logs):
                raise ValueError(
                    f"The catastrophic-overfitting guard watches {self.monitor!r}, which this run "
                    f"does not report (it reports {sorted(logs)}); it needs an evaluation attack"
                )
            return  # an epoch without validation (--validate_every)
        value = float(logs[self.monitor])
        if self.best is None or value > self.best:
            self.best, self.best_epoch = value, epoch
            if self.action == "stop":
                self.best_weights = self.model.get_weights()
            return
        if self.collapse is not None:
            return
        if value < (1 - self.max_drop) * self.best and self.best - value >= self.min_drop:
            self.collapse = {
                "epoch": epoch + 1,
                "value": value,
                "best": self.best,
                "best_epoch": self.best_epoch + 1,
                "monitor": self.monitor,
                "action": self.action,
            }
            message = (
                f"Catastrophic overfitting: {self.monitor} fell from {self.best:.3f} (epoch "
                f"{self.best_epoch + 1}) to {value:.3f} (epoch {epoch + 1})"
            )
            if self.action == "stop":
                self.model.set_weights(self.best_weights)
                self.model.stop_training = True
                message += (
                    f"; training stopped with the weights of epoch {self.best_epoch + 1}. "
                    "Use a smaller step, --attack=pgd, or --overfit_guard=warn to go on"
                )
            warnings.warn(Advice(message), stacklevel=2)
