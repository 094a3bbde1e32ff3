"""Finding a trained model and its data from what a user points at.

``locate(path, checkpoint)`` accepts what training leaves behind (see ``atalp_tf.training``):

* a ``.keras`` file (``model.keras``, ``checkpoints/best.keras`` or any other);
* a run's ``model_dir``: its ``model.keras`` (``final``), ``checkpoints/best.keras``
  (``best``) or ``checkpoints/last.keras`` (``last``);
* a run's ``export/`` SavedModel: the ``model.keras`` written beside it. The SavedModel itself
  serves probabilities, not logits, and attacks need the logits.

The run directory, when there is one, also says which data the model was trained on.
"""

import dataclasses
import json
import os

from atalp_tf import datasets
from atalp_tf.choices import CHECKPOINTS
from atalp_tf.errors import MissingPath
from atalp_tf.errors import ModelFileError

# Without a run to take it from, the evaluation's eps is the paper's CIFAR-10 one.
DEFAULT_EPS = 8 / 255
_CHECKPOINT_FILES = {
    "final": "model.keras",
    "best": os.path.join("checkpoints", "best.keras"),
    "last": os.path.join("checkpoints", "last.keras"),
}


@dataclasses.dataclass(frozen=True)
class Located:
    model_file: str
    run_dir: str | None


def _run_config(run_dir):
    """The run's configuration: ``run_config.json``, or the copy in ``results.json``."""
    path = os.path.join(run_dir, "run_config.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    path = os.path.join(run_dir, "results.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f).get("config")
    return None


def _run_dir_above(path):
    for candidate in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        if any(os.path.isfile(os.path.join(candidate, n)) for n in ("run_config.json", "results.json")):
            return candidate
    return None


def locate(path, checkpoint="final"):
    """The ``.keras`` file and run directory that ``path`` names; errors say what was expected."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"`checkpoint` must be one of {CHECKPOINTS}. Received: checkpoint={checkpoint!r}")
    path = os.path.abspath(path)
    if os.path.isfile(path):
        if not path.endswith(".keras"):
            raise ModelFileError(f"{path} is not a .keras model; give a .keras file, a model_dir or an export")
        return Located(path, _run_dir_above(path))
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        beside = os.path.join(os.path.dirname(path), "model.keras")
        if os.path.isfile(beside):
            return Located(beside, _run_dir_above(beside))
        raise MissingPath(
            f"{path} is a SavedModel without the model.keras that training writes beside it; "
            "its serving signature returns probabilities, and attacks need logits: give the .keras file"
        )
    if any(os.path.exists(os.path.join(path, name)) for name in ("run_config.json", "model.keras", "checkpoints")):
        model_file = os.path.join(path, _CHECKPOINT_FILES[checkpoint])
        if not os.path.isfile(model_file):
            raise MissingPath(
                f"The run in {path} has no {_CHECKPOINT_FILES[checkpoint]} (checkpoint={checkpoint}); "
                "has it finished? Choose another checkpoint or a .keras file"
            )
        return Located(model_file, _run_dir_above(model_file))
    raise MissingPath(f"{path} is neither a .keras file, a training model_dir nor an export")


def data_config(run_dir, **overrides):
    """The ``DataConfig`` a run trained with (and its saved split), with ``overrides`` applied."""
    config = _run_config(run_dir)
    if not config or "data" not in config:
        raise MissingPath(f"{run_dir} has no run_config.json saying which data it trained on; pass --dataset")
    values = dict(config["data"])
    split = os.path.join(run_dir, "split.json")
    if os.path.isfile(split) and not values.get("split_file"):
        values["split_file"] = split
    values.update({k: v for k, v in overrides.items() if v is not None})
    return datasets.DataConfig(**values)


def training_eps(run_dir):
    """The eps a run trained at (its validation attack's for standard training), or None."""
    config = _run_config(run_dir) if run_dir else None
    for key in ("train_attack", "eval_attack"):
        attack = (config or {}).get(key)
        if attack:
            return float(attack["eps"])
    return None


def evaluation_data(located, image_shape, *, dataset=None, data_dir=None, image_size=None, split="test",
                    num_examples=500, batch_size=100):
    """``(DataConfig, Splits, batches, number of batches)`` to evaluate ``located``'s model on:
    ``dataset`` when given, else the run's own data and split."""
    import math

    overrides = dict(batch_size=batch_size, image_size=image_size or image_shape[0])
    if dataset:
        config = datasets.DataConfig(name=dataset, data_dir=data_dir, **overrides)
    elif located.run_dir:
        config = data_config(located.run_dir, data_dir=data_dir, **overrides)
    else:
        raise MissingPath(f"{located.model_file} is not inside a training model_dir: name the data with --dataset")
    data = datasets.load(config, workdir=None)
    part = data.test if split == "test" else data.val
    count = min(num_examples, data.sizes[split])
    return config, data, part.unbatch().take(count).batch(batch_size), math.ceil(count / batch_size)


def class_names(run_dir):
    """The class names a run recorded in ``results.json``, or None."""
    path = os.path.join(run_dir, "results.json") if run_dir else None
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("class_names")
