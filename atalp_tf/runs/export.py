"""Export for serving: the SavedModel a run ends with (``export/``).

Signatures over images of the model's size ``[batch, H, W, C]`` (declared, so
``saved_model_cli show`` prints them):

* ``serving_default``: ``images``, float32 pixels in [0, 1]. Values outside [0, 1] (such as
  0-255 floats) and non-finite values are refused with a message saying so;
* ``serve_uint8``: ``images``, uint8 pixels 0-255, as decoded from image files;

and one over encoded images of any size:

* ``serve_bytes``: ``images``, a batch of JPEG, PNG, GIF or BMP files' bytes (strings), each
  decoded, resized and centre-cropped as evaluation prepares images (``evaluation_square``).

Each returns ``probabilities`` (float32 ``[batch, classes]``), ``class_ids`` (int32
``[batch]``) and ``class_names`` (string ``[batch]``, the predicted class's name), and answers
an empty batch with empty outputs; the stage features that training reads are not served. A
batch of another size or rank is refused (``is not compatible with expected shape [?,H,W,C]``).
The signature ``class_names`` (no inputs) returns every class name in class-id order, which
``assets/class_names.txt`` also holds, one per line.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from atalp_tf import atomic
from atalp_tf.datasets.pipeline import CENTRE_CROP_FRACTION
from atalp_tf.datasets.pipeline import evaluation_square
from atalp_tf.errors import OutputExists
from atalp_tf.runs.loading import model_shape

CLASS_NAMES_ASSET = "class_names.txt"


def export_serving(model: keras.Model, directory: str, image_shape: tuple | None = None, replace: bool = False,
                   class_names: list[str] | None = None, crop_fraction: float | None = CENTRE_CROP_FRACTION) -> str:
    """Writes the SavedModel of ``model`` to ``directory`` whole (under a temporary name, then
    renamed). ``directory`` must not exist unless ``replace``: the caller decides whether an old
    one goes.

    Args:
        image_shape: ``(H, W, C)`` served (None: the model's input shape).
        class_names: one name per class, in class-id order (None: the ids as names).
        crop_fraction: how ``serve_bytes`` prepares images (``evaluation_square``): the share
            of the shorter side its centre crop keeps, or None to resize whole images (the
            array datasets' way).
    """
    if os.path.exists(directory) and not replace:
        raise OutputExists(
            f"{directory} already exists; remove it or choose another export directory"
        )
    classes, model_image_shape = model_shape(model)
    image_shape = tuple(int(d) for d in (image_shape or model_image_shape))
    class_names = [str(name) for name in (class_names if class_names is not None else range(classes))]
    if len(class_names) != classes or any("\n" in name for name in class_names):
        raise ValueError(
            f"`class_names` must be {classes} names (one line each), one per class of the model. "
            f"Received {len(class_names)}: {class_names[:5]}"
        )
    scratch = tempfile.mkdtemp(prefix="atalp_export_")
    listing = os.path.join(scratch, CLASS_NAMES_ASSET)
    with open(listing, "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    # A lookup table from a file is the one resource an export copies into its assets/ folder.
    names = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(listing, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                                      tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value="",
    )

    def name_of(class_ids):
        return names.lookup(tf.cast(class_ids, tf.int64))

    def classify(images):
        logits = model(images, training=False)
        class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return tf.nn.softmax(logits, axis=-1), class_ids, name_of(class_ids)

    def nothing():
        # Batch norm's oneDNN kernel fails on an empty batch: answer it without the network.
        return tf.zeros([0, classes], tf.float32), tf.zeros([0], tf.int32), tf.zeros([0], tf.string)

    def checked(images):
        # The signature declares the shape, but a loaded signature does not enforce it, and the
        # network is convolutional: it would classify any size. EnsureShape checks it when
        # called ("... is not compatible with expected shape [?,H,W,C]"), before any other op
        # can trip over a wrong rank.
        return tf.ensure_shape(images, (None, *image_shape))

    def predict(images):
        images = checked(images)
        probabilities, class_ids, predicted = tf.cond(tf.shape(images)[0] > 0, lambda: classify(images), nothing)
        return {"probabilities": probabilities, "class_ids": class_ids, "class_names": predicted}

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

    def decoded(encoded):
        image = tf.io.decode_image(encoded, channels=image_shape[-1], expand_animations=False)
        return evaluation_square(image, image_shape[0], crop_fraction)

    def predict_bytes(images):
        prepared = tf.map_fn(decoded, images, fn_output_signature=tf.TensorSpec(image_shape, tf.float32))
        return predict(prepared)

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
    archive.add_endpoint(
        name="serve_bytes", fn=predict_bytes, input_signature=[tf.TensorSpec((None,), tf.string, name="images")],
    )
    archive.track(names)
    archive.add_endpoint(name="class_names", fn=lambda: {"class_names": name_of(tf.range(classes))},
                         input_signature=[])
    try:
        with atomic.replacing(directory) as temporary:
            archive.write_out(temporary, verbose=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory
