"""Export for serving, and checked loading of saved models.

The SavedModel has two signatures over images of the model's fixed size:

* ``serving_default`` (also ``serve``): ``images``, float32 ``[batch, H, W, C]`` in [0, 1];
* ``serve_uint8``: ``images``, uint8 ``[batch, H, W, C]`` in 0-255 (decoded image files).

Both return ``probabilities`` (float32 ``[batch, classes]``) and ``class_ids`` (int32
``[batch]``); the stage features that training reads are not served. A batch of another
image size or channel count is refused with an error that states the expected shape.
"""

import os
import re
import zipfile

import keras
import tensorflow as tf


class ModelFileError(ValueError):
    """A model file that cannot be loaded, or not as the caller needs it; the message says why
    and what to do."""


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
    functions). Raises ``ModelFileError`` (a ``ValueError``) naming the file when it cannot be
    loaded (not a .keras archive, an unregistered class, a Lambda layer) or when its class
    count or input shape differs from ``num_classes`` / ``image_shape``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path}")
    # Importing these modules registers the classes a .keras file of this package names
    # (`import atalp_tf` alone does not under `python -m atalp_tf.<command>`).
    from atalp_tf import model as _model  # noqa: F401
    from atalp_tf import preprocessing as _preprocessing  # noqa: F401

    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is not a .keras model file (a zip archive written by model.save); it may be "
            "truncated or of another format: give the .keras file that training wrote"
        )
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except (TypeError, ValueError) as error:
        raise ModelFileError(_load_problem(path, str(error))) from None
    return check_classifier(model, path, num_classes=num_classes, image_shape=image_shape)


def check_classifier(model, path, *, num_classes=None, image_shape=None):
    """``model`` (loaded from ``path``) if it classifies ``num_classes`` classes of images of
    ``image_shape`` (None: any); otherwise ``ModelFileError`` naming the file."""
    network = getattr(model, "backbone", model)  # RobustClassifier wraps a functional model
    outputs = network.output
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    classes = int(logits.shape[-1])
    shape = tuple(network.input_shape[1:])
    if num_classes is not None and classes != num_classes:
        raise ModelFileError(
            f"{path} classifies {classes} classes, but {num_classes} are expected here; "
            "use a model trained on the same classes"
        )
    if image_shape is not None and shape != tuple(image_shape):
        raise ModelFileError(
            f"{path} takes images of shape {shape}, but {tuple(image_shape)} are expected here"
        )
    return model


def _load_problem(path, message):
    """What went wrong when Keras refused ``path``, and what to do, in one paragraph."""
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", message)
    if unknown:
        return (
            f"{path} uses {unknown.group(1)!r}, a class this package does not define (a layer of "
            "your own, or a defence under test). Import the module that defines and registers it "
            "(with @keras.saving.register_keras_serializable) before loading: on the command "
            "line, --import=MODULE"
        )
    if "Lambda" in message or "safe_mode" in message:
        return (
            f"{path} holds a Lambda layer or a pickled function, which would run arbitrary code "
            "on loading, so it is refused: rebuild the model with a registered layer class instead"
        )
    first = message.strip().splitlines()[0] if message.strip() else "no reason given"
    return f"{path} could not be loaded as a Keras model ({first})"
