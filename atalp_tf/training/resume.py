"""The state a run resumes from, owned by one object: ``Resume``.

A run keeps its resumable state in ``resume/``: TensorFlow checkpoints ``ckpt-N`` (N: the
optimizer steps taken) of the model, the optimizer, the attack's random-start generator and
the best validation score and epoch, and ``data.json`` (the class count and image shape they
were made for). ``Resume``

* saves one every ``checkpoint_steps`` batches and at each epoch's end, after that epoch's
  ``last.keras`` and ``best.keras``: so a resume from a checkpoint always redoes whatever came
  after it, an epoch's end included (a save at the epoch's last batch is left to the epoch's
  end for that reason). Weights that are not finite are never saved;
* keeps the newest two, and finds them by their files (``ckpt-N.index``), not by TensorFlow's
  state file, which a kill can leave half-written;
* restores the newest that reads back whole, falling back to the one before (and saying which
  it used and why), and refuses one made for other data;
* splits the remaining training into ``fit`` calls: Keras cannot start mid-epoch, so an
  interrupted epoch is finished by a ``fit`` of its remaining steps first;
* removes what interrupted checkpoint writes left (TensorFlow's ``ckpt-N_temp`` folders, data
  files without an index).

Keras' ``BackupAndRestore(double_checkpoint=True)`` makes the same promise (the previous state
when the latest cannot be read) and is the reference for it. It is not used because it resumes
at an epoch's start only, overwrites its weights file in place (the copy of the one before is
what saves it), and keeps neither the optimizer's slots under a distribution strategy nor the
attack's generator and the best-epoch score, which an exact resume needs.
"""

import dataclasses
import errno
import os
import re

import numpy as np
import tensorflow as tf

from atalp_tf import atomic
from atalp_tf.errors import DamagedFile
from atalp_tf.errors import UserError
from atalp_tf.runs.rundir import RunDir


class CheckpointMismatch(UserError, ValueError):
    """The checkpoint to resume from was made for other classes or image shapes."""


class NotFinite(UserError, FloatingPointError):
    """Weights became NaN or infinite; they were not saved."""


KEEP = 2
_LEFTOVER = re.compile(r"^ckpt-(\d+)(_temp|\.data-.*)$")


@dataclasses.dataclass(frozen=True)
class Segment:
    """One ``fit`` call of the training still to do: from ``first_step`` (batches), starting at
    ``initial_epoch``, ``steps`` batches an epoch, ``one_epoch`` if it only finishes one."""

    initial_epoch: int
    first_step: int
    steps: int
    one_epoch: bool


def data_state(data):
    """What a run's checkpoints are made for: the class count and image shape."""
    return {"num_classes": data.num_classes, "image_shape": list(data.image_shape)}


class Resume:
    """The resumable state of the run in ``run`` (a ``RunDir``), saved to ``into`` (default its
    own ``resume/``: a worker that is not the chief saves to a scratch directory)."""

    def __init__(self, run, checkpoint, *, steps_per_epoch, updates_per_batch, into=None):
        self.run = run
        self.checkpoint = checkpoint
        self.steps_per_epoch = steps_per_epoch
        self.updates_per_batch = updates_per_batch
        self.into = into or run
        self.restored = None  # the step restored from, or None

    # --- restoring -------------------------------------------------------------------------

    def restore(self, data, log=None):
        """Restores the newest intact checkpoint of ``run``; returns the optimizer step it holds.

        Raises ``CheckpointMismatch`` when the checkpoints were made for other data, and
        ``DamagedFile`` when none can be read.
        """
        self._check_data(data)
        steps = self.run.checkpoint_steps()
        problems = []
        for step in steps:
            prefix = self.run.checkpoint_prefix(step)
            try:
                self.checkpoint.read(prefix).assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, IndexError, AssertionError) as error:
                problems.append((prefix, _first_line(error)))
                continue
            self.restored = step
            if problems and log:
                unread = "; ".join(f"{p} ({reason})" for p, reason in problems)
                log(f"  could not read {unread}: resuming from the one before, {prefix}")
            return step
        listed = "; ".join(f"{p}: {reason}" for p, reason in problems) or "none found"
        raise DamagedFile(
            f"None of the checkpoints in {self.run.file(RunDir.RESUME)} can be read ({listed}). "
            "The run cannot resume: pass `overwrite=True` to start it afresh"
        )

    def _check_data(self, data):
        if not os.path.exists(self.run.data_state):
            return
        saved = atomic.read_json(
            self.run.data_state, "the class count and image shape the checkpoints were made for",
            "Remove it and run the same command again: the checkpoint is then restored without that check",
        )
        now = data_state(data)
        if saved != now:
            raise CheckpointMismatch(
                f"The checkpoint in {os.path.dirname(self.run.data_state)} was made for "
                f"{saved['num_classes']} classes and images of shape {tuple(saved['image_shape'])}, "
                f"but the data now has {now['num_classes']} classes ({', '.join(data.class_names)}) "
                f"of shape {tuple(now['image_shape'])}; restore the data or pass `overwrite=True`"
            )

    # --- saving ----------------------------------------------------------------------------

    def start(self, data):
        """Prepares ``resume/`` for saving: removes interrupted writes and checkpoints newer than
        the one restored (they could not be read), and records the data."""
        folder = self.into.file(RunDir.RESUME)
        os.makedirs(folder, exist_ok=True)
        if self.restored is not None and self.into is self.run:
            self.drop_after(self.restored)
        self.clean()
        atomic.write_json(self.into.data_state, data_state(data))

    def clean(self):
        """Removes what interrupted checkpoint writes left."""
        folder = self.into.file(RunDir.RESUME)
        kept = set(self.into.checkpoint_steps())
        for name in os.listdir(folder):
            found = _LEFTOVER.match(name)
            if found and (found.group(2) == "_temp" or int(found.group(1)) not in kept):
                atomic.remove(os.path.join(folder, name))

    def save(self, model):
        """Saves the state after the optimizer step taken last, unless its weights are not
        finite (then ``NotFinite``, naming the checkpoint kept); keeps the newest ``KEEP``."""
        step = int(model.optimizer.iterations.value.numpy())
        bad = next((v.path for v in model.weights if not np.all(np.isfinite(v.value.numpy()))), None)
        if bad is not None:
            raise NotFinite(f"The weight {bad} is not finite after step {step}. {self.kept()}")
        prefix = self.into.checkpoint_prefix(step)
        try:
            self.checkpoint.write(prefix)
        except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError) as error:
            self.clean()
            # As the OSError it is, so that it reads as one (a full disk, no permission).
            code = errno.ENOSPC if isinstance(error, tf.errors.ResourceExhaustedError) else errno.EACCES
            raise OSError(code, os.strerror(code), prefix) from None
        atomic.stop_point("write checkpoint")
        for older in self.into.checkpoint_steps()[KEEP:]:
            self.drop(older)
        return prefix

    def drop(self, step):
        """Removes checkpoint ``step`` (its index first, so a kill leaves no half of one)."""
        prefix = self.into.checkpoint_prefix(step)
        atomic.remove(prefix + ".index")
        folder, name = os.path.split(prefix)
        for leftover in os.listdir(folder):
            if leftover.startswith(name + "."):
                atomic.remove(os.path.join(folder, leftover))

    def drop_after(self, step):
        """Removes the checkpoints newer than optimizer step ``step``."""
        for newer in self.into.checkpoint_steps():
            if newer > step:
                self.drop(newer)

    def position(self, step):
        """``(epoch, step)`` of optimizer step ``step``: the 1-based epoch and the batch."""
        batch = step // self.updates_per_batch
        return batch // self.steps_per_epoch + 1, batch

    def kept(self):
        """A sentence naming the checkpoint a resume would start from."""
        steps = self.into.checkpoint_steps()
        if not steps:
            return "No checkpoint was kept"
        epoch, batch = self.position(steps[0])
        prefix = self.into.checkpoint_prefix(steps[0])
        return f"The last good checkpoint, {prefix} (epoch {epoch}, step {batch}), was kept"

    # --- the training still to do ----------------------------------------------------------

    def segments(self, batches_done, epochs):
        """The ``fit`` calls left after ``batches_done`` batches of ``epochs`` epochs."""
        epoch, offset = divmod(batches_done, self.steps_per_epoch)
        plan = []
        if offset:
            plan.append(Segment(epoch, batches_done, self.steps_per_epoch - offset, True))
            epoch += 1
        if epoch < epochs:
            plan.append(Segment(epoch, epoch * self.steps_per_epoch, self.steps_per_epoch, False))
        return plan


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__

