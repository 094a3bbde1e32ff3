"""Export for serving, and checked loading of saved models.

The SavedModel has two signatures over images of the model's fixed size:

* ``serving_default`` (also ``serve``): ``images``, float32 ``[batch, H, W, C]`` in [0, 1];
* ``serve_uint8``: ``images``, uint8 ``[batch, H, W, C]`` in 0-255 (decoded image files).

Both return ``probabilities`` (float32 ``[batch, classes]``) and ``class_ids`` (int32
``[batch]``); the stage features that training reads are not served. A batch of another
image size or channel count is refused with an error that states the expected shape.
"""

import os

import keras
import tensorflow as tf


def export_serving(model, directory, image_shape):
    """Writes the SavedModel to ``directory``, which must not exist (exports are never replaced
    here; the caller decides whether an old one goes)."""
    if os.path.exists(directory):
        raise FileExistsError(
            f"{directory} already exists; remove it or choose another export directory"
        )
    image_shape = tuple(int(d) for d in image_shape)
    expected = "[batch, " + ", ".join(map(str, image_shape)) + "]"

    def predict(images):
        # The network is convolutional and would answer for any size; a wrong one is a
        # client's mistake, so it is refused rather than silently classified.
        check = tf.debugging.assert_equal(
            tf.shape(images)[1:],
            tf.constant(image_shape, tf.int32),
            message=f"images must have shape {expected}",
        )
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        logits = model(images, training=False)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_ids": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=predict,
        input_signature=[tf.TensorSpec((None, None, None, None), tf.float32, name="images")],
    )
    archive.add_endpoint(
        name="serve_uint8",
        fn=lambda images: predict(tf.cast(images, tf.float32) / 255.0),
        input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8, name="images")],
    )
    archive.write_out(directory, verbose=False)
    return directory


def load_classifier(path, *, num_classes=None, image_shape=None):
    """Loads a ``.keras`` model in Keras' safe mode and checks it fits what the caller expects.

    Safe mode refuses files that would run code on loading (``Lambda`` layers, pickled
    functions). Raises ``ValueError`` naming the file when its class count or input shape
    differs from ``num_classes`` / ``image_shape``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path}")
    # Importing these modules registers the classes a .keras file of this package names
    # (`import atalp_tf` alone does not under `python -m atalp_tf.<command>`).
    from atalp_tf import model as _model  # noqa: F401
    from atalp_tf import preprocessing as _preprocessing  # noqa: F401

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    network = getattr(model, "backbone", model)  # RobustClassifier wraps a functional model
    outputs = network.output
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    classes = int(logits.shape[-1])
    shape = tuple(network.input_shape[1:])
    if num_classes is not None and classes != num_classes:
        raise ValueError(
            f"{path} classifies {classes} classes, but {num_classes} are expected here; "
            "use a model trained on the same classes"
        )
    if image_shape is not None and shape != tuple(image_shape):
        raise ValueError(
            f"{path} takes images of shape {shape}, but {tuple(image_shape)} are expected here"
        )
    return model
