"""A training run's directory: the one place its files are named, and the rules for using one.

``RunDir(model_dir)`` holds what a run leaves behind:

* ``run_config.json``: the configuration, written once the run can start;
* ``split.json``: the split drawn from the seed, for file datasets without an official one;
* ``resume/``: TensorFlow checkpoints to resume from, and ``resume/data.json`` (the class
  count and image shape they were made for);
* ``checkpoints/last.keras`` after every epoch and ``checkpoints/best.keras`` at the best
  validation epoch; ``logs/`` for TensorBoard;
* ``model.keras`` (the final model), ``export/`` (the serving SavedModel) and
  ``results.json``: a run with any of these has finished;
* ``evaluation/`` and ``evaluation_best/``: what ``atalp_tf.evaluate`` and the suites write.

``plan`` decides what a run does with its directory before anything is written there (a new
run, a resume, or a replacement under ``overwrite``); ``claim`` carries the plan out once the
run can start. ``locate`` finds the model (and its run) that a user points at.

This module needs no TensorFlow: the command lines check a directory before importing it.
"""

import dataclasses
import json
import os
import re
import shutil

from atalp_tf import pixels
from atalp_tf.choices import resolve_bn_batches
from atalp_tf.errors import MissingPath
from atalp_tf.errors import ModelFileError
from atalp_tf.errors import UserError


class ModelDirInUse(UserError, FileExistsError):
    """``model_dir`` holds another run's work and ``overwrite`` was not given."""


class RunDir:
    CONFIG = "run_config.json"
    SPLIT = "split.json"
    RESUME = "resume"
    DATA_STATE = "data.json"  # inside resume/
    CHECKPOINTS = "checkpoints"
    LOGS = "logs"
    MODEL = "model.keras"
    EXPORT = "export"
    RESULTS = "results.json"
    # The models a run holds, by the name a user picks them with (--checkpoint).
    MODELS = {"final": MODEL, "best": os.path.join(CHECKPOINTS, "best.keras"), "last": os.path.join(CHECKPOINTS, "last.keras")}
    # Evaluations written into the run, of its last and its best epoch's model.
    EVALUATIONS = {"last": "evaluation", "best": "evaluation_best"}
    # Everything of a run; a directory holding any of these belongs to an earlier one.
    ARTIFACTS = (CONFIG, RESUME, CHECKPOINTS, LOGS, SPLIT, MODEL, EXPORT, RESULTS)
    FINISHED = (RESULTS, EXPORT, MODEL)

    def __init__(self, path):
        self.path = str(path)

    def file(self, name):
        return os.path.join(self.path, name)

    def model_file(self, checkpoint="final"):
        return self.file(self.MODELS[checkpoint])

    def evaluation_dir(self, which="last"):
        return self.file(self.EVALUATIONS[which])

    @property
    def data_state(self):
        return os.path.join(self.file(self.RESUME), self.DATA_STATE)

    def existing(self):
        """The run files present (empty if the directory holds none, or does not exist)."""
        return [name for name in self.ARTIFACTS if os.path.exists(self.file(name))]

    def finished(self):
        """The files present that mark a finished run."""
        return [name for name in self.FINISHED if os.path.exists(self.file(name))]

    def has_checkpoint(self):
        """Whether ``resume/`` holds a checkpoint to resume from (read from TensorFlow's state
        file, so that no TensorFlow is needed)."""
        state = os.path.join(self.file(self.RESUME), "checkpoint")
        if not os.path.isfile(state):
            return False
        with open(state) as f:
            found = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', f.read(), re.MULTILINE)
        return bool(found) and os.path.exists(os.path.join(self.file(self.RESUME), found.group(1) + ".index"))

    def saved_config(self):
        """The run's flat configuration: ``run_config.json``, or the copy in ``results.json``."""
        if os.path.isfile(self.file(self.CONFIG)):
            with open(self.file(self.CONFIG)) as f:
                return json.load(f)
        return (self.results() or {}).get("config")

    def results(self):
        if not os.path.isfile(self.file(self.RESULTS)):
            return None
        with open(self.file(self.RESULTS)) as f:
            return json.load(f)

    def class_names(self):
        """The class names the run recorded, or None."""
        return (self.results() or {}).get("class_names")

    def training_eps(self):
        """The eps the run trained at (its test attack's for standard training), or None."""
        config = self.saved_config() or {}
        for key in ("train_attack", "eval_attack"):
            if config.get(key):
                return float(config[key]["eps"])
        return None

    def data_config(self, **overrides):
        """The ``DataConfig`` the run trained with (and its saved split), ``overrides`` applied."""
        from atalp_tf.datasets import DataConfig

        config = self.saved_config()
        if not config or "data" not in config:
            raise MissingPath(f"{self.path} has no {self.CONFIG} saying which data it trained on; pass --dataset")
        values = dict(config["data"])
        if os.path.isfile(self.file(self.SPLIT)) and not values.get("split_file"):
            values["split_file"] = self.file(self.SPLIT)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return DataConfig(**values)

    @classmethod
    def holding(cls, path):
        """The run whose directory holds the file ``path`` (its own or ``checkpoints/``), or None."""
        for candidate in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            run = cls(candidate)
            if any(os.path.isfile(run.file(n)) for n in (cls.CONFIG, cls.RESULTS)):
                return run
        return None


@dataclasses.dataclass(frozen=True)
class Located:
    model_file: str
    run_dir: str | None


def locate(path, checkpoint="final"):
    """The ``.keras`` file and run directory that ``path`` names: a ``.keras`` file, a run's
    directory (its ``checkpoint``: final, best or last), or its ``export/`` (the model.keras
    beside it: the SavedModel serves probabilities, and attacks need the logits)."""
    if checkpoint not in RunDir.MODELS:
        raise ValueError(f"`checkpoint` must be one of {tuple(RunDir.MODELS)}. Received: checkpoint={checkpoint!r}")
    path = os.path.abspath(path)

    def found(model_file):
        run = RunDir.holding(model_file)
        return Located(model_file, run.path if run else None)

    if os.path.isfile(path):
        if not path.endswith(".keras"):
            raise ModelFileError(f"{path} is not a .keras model; give a .keras file, a model_dir or an export")
        return found(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        beside = os.path.join(os.path.dirname(path), RunDir.MODEL)
        if os.path.isfile(beside):
            return found(beside)
        raise MissingPath(
            f"{path} is a SavedModel without the {RunDir.MODEL} that training writes beside it; "
            "its serving signature returns probabilities, and attacks need logits: give the .keras file"
        )
    run = RunDir(path)
    if any(os.path.exists(run.file(name)) for name in (RunDir.CONFIG, RunDir.MODEL, RunDir.CHECKPOINTS)):
        if not os.path.isfile(run.model_file(checkpoint)):
            raise MissingPath(
                f"The run in {path} has no {RunDir.MODELS[checkpoint]} (checkpoint={checkpoint}); "
                "has it finished? Choose another checkpoint or a .keras file"
            )
        return found(run.model_file(checkpoint))
    raise MissingPath(f"{path} is neither a .keras file, a training model_dir nor an export")


# What runs made before a setting existed did, where that differs from the setting's default.
_LEGACY = {"bn_batches": "joint"}
# The flag of each setting whose name differs from its flat config key (dotted for nested ones).
_FLAG_NAMES = {
    "data.name": "dataset", "train_attack.steps": "attack_steps", "train_attack.loss": "attack_loss",
    "eval_attack.eps": "eval_eps", "eval_attack.step_size": "eval_step_size", "eval_attack.steps": "eval_steps",
    "synchronized_bn": "sync_batchnorm",
}
_PIXEL_FIELDS = ("eps", "step_size")


def _flatten(values, prefix=""):
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(field, value):
    if value is None:
        return "unset"
    if field.rsplit(".", 1)[-1] in _PIXEL_FIELDS and isinstance(value, float):
        return pixels.fraction(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def flag_differences(saved, current):
    """``["--batch_size: 128 then, 8 now", ...]`` for the settings that differ, named by flag."""
    saved, current = _flatten(saved), _flatten(current)
    lines = {}
    for field in sorted(set(saved) | set(current)):
        then, now = saved.get(field), current.get(field)
        if then != now:
            flag = _FLAG_NAMES.get(field, field.rsplit(".", 1)[-1])
            lines.setdefault(flag, f"--{flag}: {_show(field, then)} then, {_show(field, now)} now")
    return list(lines.values())


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run will do with its directory, decided before anything is written there.

    ``action``: ``"new"`` (nothing of a run's progress is there), ``"resume"`` (an unfinished
    run with the same settings) or ``"replace"`` (``overwrite`` of another run). ``remove``:
    the earlier files that go once the run can start; ``note``: the line that says so.
    """

    action: str
    remove: tuple = ()
    note: str | None = None

    @property
    def resumes(self):
        return self.action == "resume"


def plan(config):
    """Decides what happens to ``config.model_dir``; writes and deletes nothing.

    * Nothing there, or a run that stopped before its first checkpoint (no progress to keep):
      a new run; such leftovers go.
    * An unfinished run with checkpoints and the same settings: it resumes, with or without
      ``overwrite``, so that repeating a killed command never loses its progress.
    * A finished run (``results.json``, ``model.keras`` or ``export/``), or an unfinished one
      with other settings: refused with ``ModelDirInUse`` unless ``overwrite``, which replaces
      it (its evaluations included).
    """
    run = RunDir(config.model_dir)
    existing = run.existing()
    leftovers = tuple(existing) + tuple(n for n in RunDir.EVALUATIONS.values() if os.path.exists(run.file(n)))
    if not existing:
        return Plan("new")
    finished = run.finished()
    overwrite = config.runtime.overwrite
    if finished:
        if not overwrite:
            raise ModelDirInUse(
                f"--model_dir {run.path} already holds a finished run ({', '.join(finished)}); "
                "choose another directory, or pass --overwrite to replace it"
            )
        return Plan("replace", leftovers, f"Replacing the finished run in {run.path} (--overwrite): "
                                          f"its {', '.join(leftovers)} go")
    if not run.has_checkpoint():
        return Plan("new", leftovers, f"{run.path} holds a run that stopped before its first checkpoint; "
                                      "starting afresh")
    differences = _differences_from_saved(run, config)
    if not differences:
        return Plan("resume")
    if overwrite:
        return Plan("replace", leftovers, f"Replacing the unfinished run in {run.path} (--overwrite), "
                                          f"started with other flags ({'; '.join(differences)})")
    raise ModelDirInUse(
        f"--model_dir {run.path} holds an unfinished run started with other flags "
        f"({'; '.join(differences)}); run its command again to resume it, choose another "
        "directory, or pass --overwrite to replace it"
    )


def _differences_from_saved(run, config):
    saved = run.saved_config()
    if saved is None:
        return [f"no {RunDir.CONFIG} says which (it holds {', '.join(run.existing())})"]
    # A run from an older version lacks the settings added since; it ran with their defaults,
    # or with what the package did before the setting existed (_LEGACY).
    defaults = type(config)(model_dir=config.model_dir, data=config.data).identity()
    current = config.identity()
    saved = {k: v for k, v in saved.items() if k in current}
    for name, default in defaults.items():
        saved.setdefault(name, _LEGACY.get(name, default))
    for values in (saved, current):  # "auto" is compared as what it means for the method
        values["bn_batches"] = resolve_bn_batches(values["method"], values["bn_batches"])
    return flag_differences(saved, current)


def claim(config, chosen, log=None):
    """Carries out ``chosen`` (a ``Plan``): removes what it replaces, saying so, and writes
    ``run_config.json``."""
    run = RunDir(config.model_dir)
    for name in chosen.remove:
        path = run.file(name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if chosen.note and log:
        log(chosen.note)
    os.makedirs(run.path, exist_ok=True)
    with open(run.file(RunDir.CONFIG), "w") as f:
        json.dump(config.flat(), f, indent=2)

