"""A training run's directory: the one place its files are named, and the rules for using one.

``RunDir(model_dir)`` holds what a run leaves behind:

* ``run_config.json``: the configuration, written once the run can start;
* ``split.json``: the split drawn from the seed, for file datasets without an official one;
* ``resume/``: the checkpoints to resume from (``atalp_tf.training.resume``), and
  ``resume/data.json`` (the class count and image shape they were made for);
* ``checkpoints/last.keras`` after every epoch and ``checkpoints/best.keras`` at the best
  validation epoch; ``logs/`` for TensorBoard;
* ``model.keras`` (the final model) and ``export/`` (the serving SavedModel);
* ``results.json``, written last: the run has finished when, and only when, it is there;
* ``evaluation/`` and ``evaluation_best/``: what ``atalp_tf.evaluate`` and the suites write;
* ``.atalp_tf.manifest.json``: the names the package created here, the only ones it ever
  deletes, and ``.atalp_tf.lock``, the lock a process holds while it writes here.

Every file is written whole or not at all (``atalp_tf.atomic``). ``plan`` decides what a run
does with its directory before anything is written (a new run, a resume, or a replacement
under ``overwrite``); ``claim`` carries the plan out once the run can start. ``locate`` finds
the model (and its run) that a user points at.

This module needs no TensorFlow: the command lines check a directory before importing it.
"""

import contextlib
import dataclasses
import os
import re

from atalp_tf import atomic
from atalp_tf import pixels
from atalp_tf.choices import resolve_bn_batches
from atalp_tf.errors import DamagedFile
from atalp_tf.errors import MissingPath
from atalp_tf.errors import ModelFileError
from atalp_tf.errors import UserError
from atalp_tf.runs.lock import RunLock


class ModelDirInUse(UserError, FileExistsError):
    """``model_dir`` holds another run's work, or files the package did not write."""


_CHECKPOINT = re.compile(r"^ckpt-(\d+)\.index$")


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
    MANIFEST = ".atalp_tf.manifest.json"
    LOCK = ".atalp_tf.lock"
    # The models a run holds, by the name a user picks them with (--checkpoint).
    MODELS = {"final": MODEL, "best": os.path.join(CHECKPOINTS, "best.keras"), "last": os.path.join(CHECKPOINTS, "last.keras")}
    # Evaluations written into the run, of its last and its best epoch's model.
    EVALUATIONS = {"last": "evaluation", "best": "evaluation_best"}
    # Everything a training run writes at the top of its directory.
    ARTIFACTS = (CONFIG, SPLIT, RESUME, CHECKPOINTS, LOGS, MODEL, EXPORT, RESULTS)

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

    def lock(self, command):
        """The directory's lock (``runs.lock``), taken by ``with``; ``command`` says who holds it."""
        return RunLock(self.file(self.LOCK), command)

    def entries(self):
        """The names in the directory, but for the package's bookkeeping and temporaries."""
        if not os.path.isdir(self.path):
            return []
        return sorted(n for n in os.listdir(self.path)
                      if n not in (self.MANIFEST, self.LOCK) and not atomic.is_temporary(n))

    def written(self):
        """The names the package created here (``MANIFEST``). A run of a version from before the
        manifest (a readable configuration or results file, no manifest) owns the run files
        and evaluations it holds."""
        if os.path.isfile(self.file(self.MANIFEST)):
            return set(atomic.read_json(self.file(self.MANIFEST), "the names atalp_tf created here",
                                        _REMOVE_BY_HAND.format(self=self))["written"])
        if self.saved_config() is None:
            return set()
        return set(self.ARTIFACTS + tuple(self.EVALUATIONS.values())) & set(self.entries())

    def record(self, *names):
        """Adds ``names`` to the manifest (before they are created, so that none is unrecorded)."""
        written = self.written()
        if not set(names) <= written or not os.path.isfile(self.file(self.MANIFEST)):
            self._write_manifest(written | set(names))

    def _write_manifest(self, names):
        os.makedirs(self.path, exist_ok=True)
        atomic.write_json(self.file(self.MANIFEST), {"written": sorted(names)})

    def remove_written(self):
        """Removes what the package created here (the manifest's names), and nothing else."""
        for name in sorted(self.written()):
            atomic.remove(self.file(name))
        self._write_manifest(())

    def finished(self):
        """Whether the run has finished: its ``results.json``, written last, is there."""
        return os.path.isfile(self.file(self.RESULTS))

    def checkpoint_steps(self):
        """The steps of the checkpoints in ``resume/``, newest first (found by their files, not
        by a state file that a kill may have left half-written)."""
        folder = self.file(self.RESUME)
        if not os.path.isdir(folder):
            return []
        found = (_CHECKPOINT.match(n) for n in os.listdir(folder))
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def checkpoint_prefix(self, step):
        return os.path.join(self.file(self.RESUME), f"ckpt-{step}")

    def has_checkpoint(self):
        """Whether ``resume/`` holds a checkpoint to resume from."""
        return bool(self.checkpoint_steps())

    def saved_config(self):
        """The run's flat configuration: ``run_config.json``, or the copy in ``results.json``."""
        if os.path.isfile(self.file(self.CONFIG)):
            return atomic.read_json(self.file(self.CONFIG), "the run's settings", _CONFIG_ADVICE)
        return (self.results() or {}).get("config")

    def results(self):
        if not os.path.isfile(self.file(self.RESULTS)):
            return None
        return atomic.read_json(self.file(self.RESULTS), "the finished run's test results",
                                "Pass `overwrite=True` to run it again, or restore the file")

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
            raise MissingPath(f"{self.path} has no {self.CONFIG} saying which data it trained on; pass `dataset`")
        values = dict(config["data"])
        if os.path.isfile(self.file(self.SPLIT)) and not values.get("split_file"):
            values["split_file"] = self.file(self.SPLIT)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return DataConfig(**values)

    def is_run(self):
        """Whether the directory holds a run (its configuration, results or manifest)."""
        return any(os.path.isfile(self.file(n)) for n in (self.CONFIG, self.RESULTS, self.MANIFEST))

    @classmethod
    def holding(cls, path):
        """The run whose directory holds the file ``path`` (its own or ``checkpoints/``), or None."""
        for candidate in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            run = cls(candidate)
            if any(os.path.isfile(run.file(n)) for n in (cls.CONFIG, cls.RESULTS)):
                return run
        return None


_REMOVE_BY_HAND = "Remove it, and the files of the run in {self.path} by hand, or choose another directory"
_CONFIG_ADVICE = (
    "Without it the run cannot tell whether it resumes with the same settings: restore it, or "
    "pass `overwrite=True` to start the run afresh (what the run wrote goes)"
)


@contextlib.contextmanager
def writing_into(path, command):
    """While writing into the folder ``path``: if it is a run's folder (an evaluation, say),
    holds that run's lock and records ``path`` in its manifest when the package creates it."""
    run = RunDir(os.path.dirname(os.path.abspath(path)))
    if not run.is_run():
        yield
        return
    with run.lock(command):
        if not os.path.exists(path):
            run.record(os.path.basename(os.path.abspath(path)))
        yield


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


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run will do with its directory, decided before anything is written there.

    ``action``: ``"new"`` (nothing of a run's progress is there), ``"resume"`` (an unfinished
    run with the same settings) or ``"replace"`` (``overwrite`` of another run). ``remove``:
    whether what the package wrote there goes once the run can start; ``note``: the line that
    says so.
    """

    action: str
    remove: bool = False
    note: str | None = None

    @property
    def resumes(self):
        return self.action == "resume"


def plan(config):
    """Decides what happens to ``config.model_dir``; writes and deletes nothing.

    * Nothing there: a new run.
    * An unfinished run with checkpoints and the same settings: it resumes, with or without
      ``overwrite``, so that repeating a killed command never loses its progress; files of
      the user's beside it stay as they are.
    * A run of ours that stopped before its first checkpoint (no progress to keep): its files
      go and a new run starts.
    * A finished run (``results.json``), or an unfinished one with other settings: refused with
      ``ModelDirInUse`` unless ``overwrite``, which replaces it (its evaluations included).
    * Anything the package did not write (not in the manifest) is never deleted: a new run or
      a replacement is refused, naming the first such file.
    """
    run = RunDir(config.model_dir)
    run.lock("").check()
    present = run.entries()
    if not present:
        return Plan("new")
    overwrite = config.runtime.overwrite
    try:
        written = run.written()
    except DamagedFile:
        if not overwrite:
            raise
        written = set()
    foreign = [n for n in present if n not in written]
    if run.finished():
        if not overwrite:
            raise ModelDirInUse(
                f"`model_dir` {run.path} already holds a finished run ({RunDir.RESULTS} is there); "
                "choose another directory, or pass `overwrite=True` to replace it"
            )
        _refuse_foreign(run, foreign, "replace the finished run")
        return Plan("replace", True, f"Replacing the finished run in {run.path} (`overwrite=True`): "
                                     f"its {', '.join(n for n in present if n in written)} go")
    if not run.has_checkpoint():
        _refuse_foreign(run, foreign, "start a run")
        return Plan("new", True, f"{run.path} holds a run that stopped before its first checkpoint; "
                                 "starting afresh")
    try:
        differences = _differences_from_saved(run, config)
    except DamagedFile:
        if not overwrite:
            raise
        differences = [f"its {RunDir.CONFIG} is damaged"]
    if not differences:
        _refuse_foreign(run, [n for n in foreign if n in RunDir.ARTIFACTS], "resume the run")
        return Plan("resume")
    if overwrite:
        _refuse_foreign(run, foreign, "replace the unfinished run")
        return Plan("replace", True, f"Replacing the unfinished run in {run.path} (`overwrite=True`), "
                                     f"started with other flags ({'; '.join(differences)})")
    raise ModelDirInUse(
        f"`model_dir` {run.path} holds an unfinished run started with other flags "
        f"({'; '.join(differences)}); run its command again to resume it, choose another "
        "directory, or pass `overwrite=True` to replace it"
    )


def _refuse_foreign(run, foreign, to_do):
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ModelDirInUse(
            f"`model_dir` {run.path} holds {foreign[0]}{more}, which atalp_tf did not write there, "
            f"so it will not {to_do} in it: the package deletes only what it wrote. Choose another "
            "directory, or move those files away"
        )


def _differences_from_saved(run, config):
    saved = run.saved_config()
    if saved is None:
        return [f"no {RunDir.CONFIG} says which (it holds {', '.join(run.entries())})"]
    # A run from an older version lacks the settings added since; it ran with their defaults,
    # or with what the package did before the setting existed (_LEGACY).
    defaults = type(config)(model_dir=config.model_dir, data=config.data).identity()
    current = config.identity()
    saved = {k: v for k, v in saved.items() if k in current}
    for name, default in defaults.items():
        saved.setdefault(name, _LEGACY.get(name, default))
    for values in (saved, current):  # "auto" is compared as what it means for the method
        values["bn_batches"] = resolve_bn_batches(values["method"], values["bn_batches"])
    return config.flag_differences(saved, current)


def claim(config, chosen, log=None):
    """Carries out ``chosen`` (a ``Plan``): removes what the package wrote there if it replaces
    it, saying so, records the run's files in the manifest and writes ``run_config.json``. The
    caller holds the directory's lock."""
    run = RunDir(config.model_dir)
    if chosen.remove:
        run.remove_written()
    if chosen.note and log:
        log(chosen.note)
    atomic.remove_temporaries(run.path)
    run.record(*(n for n in RunDir.ARTIFACTS if n not in run.entries()))
    atomic.write_json(run.file(RunDir.CONFIG), config.flat())
