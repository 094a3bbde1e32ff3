"""Export for serving: a SavedModel whose signature maps images to probabilities and ids."""

import os

import keras
import tensorflow as tf


def export_serving(model, directory, image_shape):
    """Writes a SavedModel with one signature, ``serving_default`` (also ``serve``).

    The signature takes ``images``, float32 ``[batch, *image_shape]`` in [0, 1], and returns
    ``probabilities`` (float32 ``[batch, classes]``) and ``class_ids`` (int32 ``[batch]``).
    The stage features that training reads are not served. ``directory`` must not exist:
    an export is never overwritten here; the caller decides whether to remove an old one.
    """
    if os.path.exists(directory):
        raise FileExistsError(
            f"{directory} already exists; remove it or choose another export directory"
        )

    def serve(images):
        logits = model(images, training=False)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_ids": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[tf.TensorSpec((None, *image_shape), tf.float32, name="images")],
    )
    archive.write_out(directory, verbose=False)
    return directory
