"""What to read (``DataConfig``) and what comes back (``Splits``), shared by every source."""

import dataclasses

import tensorflow as tf

from atalp_tf.datasets import pipeline


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to read and how.

    Args:
        name: a source listed in the module docstring.
        batch_size: global batch size.
        data_dir: where ``flowers17`` and ``folder`` data live; TFDS' data_dir for ``tfds:``.
        image_size: side of the square images the model sees; None keeps an array source's
            native size (file sources need it).
        seed: seed of the split and the shuffling.
        augment: ``auto`` (resized_crop for files, pad_crop for CIFAR-10, none for digits),
            ``none``, ``flip``, ``pad_crop`` or ``resized_crop``.
        bad_images: ``stop`` at unreadable files (listing them), or ``skip`` them.
        cache: ``""`` (none), ``"memory"`` or a file prefix for decoded images.
        split_file: a ``split.json`` of an earlier run to reuse.
        split_index: which of ``datasplits.mat``'s three 17 Flowers splits (1-3).
    """

    name: str
    batch_size: int
    data_dir: str | None = None
    image_size: int | None = None
    seed: int = 0
    augment: str = "auto"
    bad_images: str = "stop"
    cache: str = ""
    split_file: str | None = None
    split_index: int = 1


@dataclasses.dataclass(frozen=True)
class Splits:
    """Training stream, batched val/test datasets, and what the model needs to know."""

    train_stream: pipeline.TrainStream
    val: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    image_shape: tuple
    class_names: tuple
    sizes: dict
    skipped: tuple = ()  # (path, reason) of unreadable files left out
    split_path: str | None = None
    drawn: tuple | None = None  # (root, parts, class names) of a split drawn here, not yet saved
    notes: tuple = ()  # things a user should know, such as classes missing from a split

    @property
    def train(self):
        """The first epoch's training batches (``train_stream.from_step`` for training)."""
        return self.train_stream.epoch(0)
