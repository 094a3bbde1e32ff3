"""What watches a training run, as Keras callbacks.

* ``ResumeCheckpoint``: the resumable state every N batches and at each epoch's end; a NaN or
  infinite loss stops the run, keeping the last checkpoint whose weights gave a finite loss.
* ``SaveModel``: ``checkpoints/last.keras`` after every epoch, and ``best.keras`` at the best
  validation epoch (its score and epoch kept in the resumable state), each written whole.
* ``ValidateAveraged``: validation with the weights' moving average, when the model keeps one.
* ``StopAfterOneEpoch``: ends the ``fit`` that finishes an interrupted epoch.
* ``CatastrophicOverfittingGuard``: FGSM and free adversarial training can, within an epoch,
  learn to defeat their own weak attack while robust accuracy against PGD falls to near zero
  (Wong et al. 2020, Sec. 5); it does not come back. The guard reads the validation PGD
  accuracy after every validated epoch and calls a collapse when it falls below
  ``1 - max_drop`` of its best so far, by at least ``min_drop`` (so noise on a small
  validation set at low accuracy does not trigger it). On a collapse, ``action="stop"`` puts
  back the weights of the best epoch and stops training; ``action="warn"`` only warns. Either
  way ``collapse`` describes what happened.
* ``EpochLine``: training progress a person can read, one line per epoch, at most 120
  columns. Keras' own progress bar prints every metric under its full name (over 200 columns
  for AT + ALP with validation) and, on a terminal, redraws itself with ANSI codes and
  carriage returns that make a mess of a log file. ``EpochLine`` prints instead::

      epoch  3/30  6.1s (val 35%)  loss 1.300 ce 1.176 lp 0.342 at 0.293 | train 0.838/0.581 | val 0.894/0.564

  ``train`` and ``val`` are clean / adversarial (PGD) accuracy; ``lp``, ``at`` and ``kl`` the
  logit pairing, attention pairing and TRADES terms; ``val 35%`` the share of the epoch's time
  spent validating. On a terminal (``live=True``) a status line is redrawn within the epoch (at
  most twice a second); written to a pipe or a file, only the finished lines appear.
"""

import contextlib
import math
import sys
import time
import warnings

import keras
import numpy as np

from atalp_tf import atomic
from atalp_tf.choices import OVERFIT_GUARD_ACTIONS
from atalp_tf.errors import Advice
from atalp_tf.errors import UserError
from atalp_tf.models.objectives import TERMS


class TrainingDiverged(UserError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


def global_step(model):
    """Optimizer steps taken so far (a distributed variable needs an explicit read)."""
    return int(model.optimizer.iterations.value.numpy())


def batches_done(model):
    """Training batches taken so far (free training takes several optimizer steps on each)."""
    return global_step(model) // model.updates_per_batch


class ResumeCheckpoint(keras.callbacks.Callback):
    """Saves the resumable state (a ``training.resume.Resume``) every ``every`` batches and at
    the end of each epoch, after the callbacks before it in the list.

    The save at an epoch's last batch is left to the epoch's end, so that a checkpoint at an
    epoch's boundary always comes after that epoch's validation and model files. A NaN or
    infinite loss stops the run: the checkpoint of the weights that gave it is removed, so the
    one kept is the newest whose weights still gave a finite loss.
    """

    def __init__(self, resume, every):
        super().__init__()
        self.resume = resume
        self.every = every
        self.last_saved = None

    def _save(self):
        step = global_step(self.model)
        if step != self.last_saved:
            self.resume.save(self.model)
            self.last_saved = step

    def on_train_begin(self, logs=None):
        self.last_saved = global_step(self.model)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            # The loss of this batch came from the weights after the batch before.
            self.resume.drop_after(global_step(self.model) - 2 * self.model.updates_per_batch)
            raise TrainingDiverged(
                f"The training loss became {float(loss)} at step {batches_done(self.model)}. "
                f"{self.resume.kept()}; lower `learning_rate` (or the pairing weights) and start again"
            )
        atomic.stop_point("batch")
        if not self.every:
            return  # no step read per batch when only epoch ends save
        done = batches_done(self.model)
        if done % self.every == 0 and done % self.resume.steps_per_epoch:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        atomic.stop_point("epoch end")
        self._save()


class SaveModel(keras.callbacks.Callback):
    """Writes the model to ``path`` (whole, by rename) at every epoch's end, its averaged weights
    if it keeps an average; with ``monitor``, only when it beats ``best`` (a variable the
    resumable state keeps, as is ``best_epoch``)."""

    def __init__(self, path, monitor=None, best=None, best_epoch=None):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = best
        self.best_epoch = best_epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None or not _scalar(value) > float(self.best.numpy()):
                return  # an epoch without validation, or no better
        with _averaged(self.model), atomic.replacing(self.path) as temporary:
            self.model.save(temporary)
        if self.monitor is not None:
            self.best.assign(_scalar(logs[self.monitor]))
            self.best_epoch.assign(epoch + 1)


class ValidateAveraged(keras.callbacks.Callback):
    """Validation with the weights' moving average (``RobustClassifier.ema_momentum``), which
    the best epoch, the guard and the epoch line then judge; training goes on with its own."""

    def __init__(self):
        super().__init__()
        self._swapped = contextlib.ExitStack()

    def on_test_begin(self, logs=None):
        self._swapped.enter_context(_averaged(self.model))

    def on_test_end(self, logs=None):
        self._swapped.close()


def _averaged(model):
    return model.averaged_weights() if hasattr(model, "averaged_weights") else contextlib.nullcontext()


class StopAfterOneEpoch(keras.callbacks.Callback):
    """Ends the ``fit`` that finishes an interrupted epoch (Keras cannot start mid-epoch)."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


class CatastrophicOverfittingGuard(keras.callbacks.Callback):
    """Watches validation PGD accuracy for a collapse (see the module's docstring)."""

    def __init__(self, monitor="val_pgd_accuracy", action="stop", max_drop=0.5, min_drop=0.1):
        super().__init__()
        if action not in OVERFIT_GUARD_ACTIONS:
            raise ValueError(f"`action` must be one of {OVERFIT_GUARD_ACTIONS}. Received: action={action!r}")
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
                    "Use a smaller step, `attack=pgd`, or `overfit_guard=warn` to go on"
                )
            warnings.warn(Advice(message), stacklevel=2)


WIDTH = 120


def _scalar(value):
    # Batch logs may hold tensors, and a multi-worker run's metrics are length-1 vectors.
    return float(np.asarray(value).reshape(-1)[0])


def _pair(logs, prefix):
    clean, adversarial = logs.get(f"{prefix}clean_accuracy"), logs.get(f"{prefix}adv_accuracy")
    if adversarial is None:
        adversarial = logs.get(f"{prefix}pgd_accuracy")
    if clean is None:
        return ""
    return f"{_scalar(clean):.3f}" + (f"/{_scalar(adversarial):.3f}" if adversarial is not None else "")


def describe(logs, prefix=""):
    """The metrics of ``logs`` in short form: ``loss 1.300 ce 1.176 ... | train 0.838/0.581``."""
    terms = " ".join(
        f"{short} {_scalar(logs[prefix + name]):.3f}" for name, short in TERMS.items() if prefix + name in logs
    )
    accuracy = _pair(logs, prefix)
    return terms + (f" | {'val' if prefix else 'train'} {accuracy}" if accuracy else "")


class EpochLine(keras.callbacks.Callback):
    """Prints a line per epoch with its time, the validation share and the metrics.

    Args:
        epochs: the run's total epochs, for ``epoch k/N``.
        live: redraw a status line within the epoch (a terminal); None: when stdout is one.
        write: where lines go (a callable of a string).
    """

    def __init__(self, epochs, live=None, write=None):
        super().__init__()
        self.epochs = epochs
        self.live = sys.stdout.isatty() if live is None else live
        self.write = write or (lambda line: print(line, flush=True))
        self.validation_seconds = 0.0
        self.epoch_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.started = time.time()
        self.validation_seconds = 0.0
        self.last_draw = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if not self.live or time.time() - self.last_draw < 0.5:
            return
        self.last_draw = time.time()
        status = f"epoch {self.epoch + 1:>2}/{self.epochs}  step {batch + 1}  {describe(logs or {})}"
        sys.stdout.write("\r" + status[: WIDTH - 1].ljust(WIDTH - 1))
        sys.stdout.flush()

    def on_test_begin(self, logs=None):
        self.validation_started = time.time()

    def on_test_end(self, logs=None):
        self.validation_seconds += time.time() - self.validation_started

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epoch_seconds = time.time() - self.started
        share = self.validation_seconds / max(self.epoch_seconds, 1e-9)
        timing = f"{self.epoch_seconds:.1f}s" + (f" (val {share:.0%})" if self.validation_seconds else "")
        validation = {k: v for k, v in logs.items() if k.startswith("val_")}
        line = f"epoch {epoch + 1:>2}/{self.epochs}  {timing}  {describe(logs)}"
        if validation:
            line += " | " + describe(validation, "val_").split(" | ")[-1]
        if self.live:
            sys.stdout.write("\r" + " " * (WIDTH - 1) + "\r")
        self.write(line[:WIDTH])
