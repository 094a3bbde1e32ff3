"""Loading a saved classifier, checked: the one way the package reads ``.keras`` files.

Files load in Keras' safe mode, so a file that would run code on loading (a ``Lambda`` layer, a
pickled function) is refused; a file that names a class this package does not register asks
for the module that does; and a model of another class count or input shape than the caller
needs is refused naming the file. Every class a ``.keras`` file of this package can name is
registered by importing this module: the classifier, the caffe preprocessing layer and the
one-cycle learning-rate schedule, under the names files written by earlier versions use.
"""

import math
import os
import re
import zipfile

import keras

from atalp_tf.errors import MissingPath
from atalp_tf.errors import ModelFileError
from atalp_tf.models import classifier as _classifier  # also registers RobustClassifier
from atalp_tf.models import stages as _stages
from atalp_tf.models import preprocessing as _preprocessing  # noqa: F401 (registers CaffePreprocessing)
from atalp_tf import optimizers as _optimizers  # noqa: F401 (registers OneCycle)


def load_classifier(path: str | os.PathLike, *, num_classes: int | None = None,
                    image_shape: tuple | None = None) -> keras.Model:
    """Loads a ``.keras`` model in Keras' safe mode, checks it fits what the caller expects, and
    compiles it so that ``model.evaluate`` works at once: a ``RobustClassifier`` with its own
    metrics (clean and PGD accuracy), another classifier with cross-entropy and accuracy. Call
    ``compile`` again with an optimizer to train it further.

    Safe mode refuses files that would run code on loading (``Lambda`` layers, pickled
    functions). Raises ``ModelFileError`` (a ``ValueError``) naming the file when it cannot be
    loaded (not a .keras archive, an unregistered class, a Lambda layer) or when its class
    count or input shape differs from ``num_classes`` / ``image_shape``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingPath(f"No model file at {path}")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is not a .keras model file (a zip archive written by model.save); it may be "
            "truncated or of another format: give the .keras file that training wrote"
        )
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except (zipfile.BadZipFile, OSError, KeyError, EOFError) as error:
        # The archive opens but a member is garbled (a bad CRC, a truncated weights file).
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ModelFileError(
            f"{path} is damaged ({reason}): it does not read back as the model it was saved as. Give "
            "an intact copy, or train it again (for a run's own file: `overwrite=True`)"
        ) from None
    except (TypeError, ValueError) as error:
        raise ModelFileError(_load_problem(path, str(error))) from None
    check_classifier(model, path, num_classes=num_classes, image_shape=image_shape)
    return compiled(model)


def compiled(model):
    """``model`` compiled for evaluation (``load_classifier``)."""
    if isinstance(model, _classifier.RobustClassifier):
        model.compile()
    else:
        model.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=_stages.softmax_layer(model) is None),
            metrics=["sparse_categorical_accuracy"],
        )
    return model


def model_shape(model):
    """``(class count, image shape)`` of a classifier: a ``RobustClassifier``, or any Keras
    model whose output is the logits."""
    network = _classifier.network_of(model)
    outputs = network.output
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    return int(logits.shape[-1]), tuple(network.input_shape[1:])


def first_examples(batches, count, batch_size):
    """The first ``count`` examples of batched ``batches``, in batches of ``batch_size``, and
    how many batches that is: the part of a split an evaluation reads."""
    return batches.unbatch().take(count).batch(batch_size), math.ceil(count / batch_size)


def check_classifier(model, path, *, num_classes=None, image_shape=None):
    """``model`` (loaded from ``path``) if it classifies ``num_classes`` classes of images of
    ``image_shape`` (None: any); otherwise ``ModelFileError`` naming the file."""
    classes, shape = model_shape(model)
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
            "line, `import=MODULE`"
        )
    if "Lambda" in message or "safe_mode" in message:
        return (
            f"{path} holds a Lambda layer or a pickled function, which would run arbitrary code "
            "on loading, so Keras' safe_mode refuses it: rebuild the model with a registered layer "
            "class instead"
        )
    first = message.strip().splitlines()[0] if message.strip() else "no reason given"
    return f"{path} could not be loaded as a Keras model ({first})"
