"""Export for serving: the SavedModel a run ends with (``export/``).

The SavedModel has exactly two signatures, over images of the model's size ``[batch, H, W, C]``
(declared, so ``saved_model_cli show`` prints it):

* ``serving_default``: ``images``, float32 pixels in [0, 1]. Values outside [0, 1] (such as
  0-255 floats) and non-finite values are refused with a message saying so;
* ``serve_uint8``: ``images``, uint8 pixels 0-255, as decoded from image files.

Both return ``probabilities`` (float32 ``[batch, classes]``) and ``class_ids`` (int32
``[batch]``), and answer an empty batch with empty outputs; the stage features that training
reads are not served. A batch of another size or rank is refused (``is not compatible with
expected shape [?,H,W,C]``).
"""

import os

import keras
import tensorflow as tf

from atalp_tf import atomic
from atalp_tf.errors import OutputExists
from atalp_tf.runs.loading import model_shape


def export_serving(model, directory, image_shape, replace=False):
    """Writes the SavedModel to ``directory`` whole (under a temporary name, then renamed).
    ``directory`` must not exist unless ``replace``: the caller decides whether an old one goes."""
    if os.path.exists(directory) and not replace:
        raise OutputExists(
            f"{directory} already exists; remove it or choose another export directory"
        )
    image_shape = tuple(int(d) for d in image_shape)
    classes, _ = model_shape(model)

    def classify(images):
        logits = model(images, training=False)
        return tf.nn.softmax(logits, axis=-1), tf.argmax(logits, axis=-1, output_type=tf.int32)

    def nothing():
        # Batch norm's oneDNN kernel fails on an empty batch: answer it without the network.
        return tf.zeros([0, classes], tf.float32), tf.zeros([0], tf.int32)

    def checked(images):
        # The signature declares the shape, but a loaded signature does not enforce it, and the
        # network is convolutional: it would classify any size. EnsureShape checks it when
        # called ("... is not compatible with expected shape [?,H,W,C]"), before any other op
        # can trip over a wrong rank.
        return tf.ensure_shape(images, (None, *image_shape))

    def predict(images):
        images = checked(images)
        probabilities, class_ids = tf.cond(tf.shape(images)[0] > 0, lambda: classify(images), nothing)
        return {"probabilities": probabilities, "class_ids": class_ids}

    def predict_float(images):
        # Clients send what they have: 0-255 floats, or a NaN from a broken decoder, would be
        # classified as confidently as a real image; refuse them with a message instead.
        images = checked(images)
        checks = [
            tf.debugging.assert_all_finite(images, "images must be finite numbers (no NaN or inf)"),
            tf.debugging.assert_greater_equal(
                images, 0.0, message="images must be float pixels in [0, 1]; values below 0 were sent"
            ),
            tf.debugging.assert_less_equal(
                images, 1.0,
                message="images must be float pixels in [0, 1]; values above 1 were sent (0-255 pixels "
                "go to the serve_uint8 signature as uint8, or divide them by 255)",
            ),
        ]
        with tf.control_dependencies(checks):
            return predict(tf.identity(images))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=predict_float,
        input_signature=[tf.TensorSpec((None, *image_shape), tf.float32, name="images")],
    )
    archive.add_endpoint(
        name="serve_uint8",
        fn=lambda images: predict(tf.cast(images, tf.float32) / 255.0),
        input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8, name="images")],
    )
    with atomic.replacing(directory) as temporary:
        archive.write_out(temporary, verbose=False)
    return directory
