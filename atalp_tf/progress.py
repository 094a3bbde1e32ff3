"""Training progress a person can read: one line per epoch, at most 120 columns.

Keras' own progress bar prints every metric under its full name (over 200 columns for AT + ALP
with validation) and, on a terminal, redraws itself with ANSI codes and carriage returns that
make a mess of a log file. ``EpochLine`` prints instead:

    epoch  3/30  6.1s (val 35%)  loss 1.300 ce 1.176 lp 0.342 at 0.293 | train 0.838/0.581 | val 0.894/0.564

``train`` and ``val`` are clean / adversarial (PGD) accuracy; ``lp``, ``at`` and ``kl`` are
the logit pairing, attention pairing and TRADES terms; ``val 35%`` is the share of the epoch's
time spent validating. On a terminal (``live=True``) a status line is redrawn within the epoch
(at most twice a second); written to a pipe or a file, only the finished lines appear.
"""

import sys
import time

import keras
import numpy as np

WIDTH = 120
# Short names of the logged metrics, in the order they are shown.
_TERMS = (("loss", "loss"), ("ce", "ce"), ("logit_pairing", "lp"), ("attention_pairing", "at"), ("trades_kl", "kl"))


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
        f"{short} {_scalar(logs[prefix + name]):.3f}" for name, short in _TERMS if prefix + name in logs
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
