"""What one training run needs, in groups: ``TrainConfig``.

Pixel quantities (eps, step sizes) are in [0, 1] units. The groups say what each setting is
about; ``runtime`` holds the settings of how a run goes (strategy, checkpoints, validation
schedule, verbosity), which may change when an interrupted run is started again, while every
other setting must stay the same for it to resume.

``run_config.json`` and ``results.json`` keep the flat form they always had (one key per
setting, the data and the attacks as dicts): ``flat()`` writes it, ``from_flat`` reads it, and
settings never seen before take their defaults.
"""

import dataclasses

from atalp_tf.attacks.pgd import PGDConfig
from atalp_tf.attacks.training_attack import TrainingAttack
from atalp_tf.attacks.training_attack import evaluation
from atalp_tf.choices import OBJECTIVES
from atalp_tf.datasets import DataConfig
from atalp_tf.training import options


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    architecture: str = "resnet18"
    width: int = 64
    weights: str | None = None
    synchronized_bn: bool = False
    num_classes: int | None = None  # when given, the dataset must have this many classes
    precision: str = "float32"


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings:
    method: str = "at_alp"
    alpha: float = 0.5
    beta: float = 1.0
    trades_beta: float = 6.0
    clean_ce_weight: float = 0.0  # share of clean CE in alp, at and at_alp (Kannan et al.: 0.5)
    bn_batches: str = "auto"  # choices.BN_BATCHES; auto: each method's reference


@dataclasses.dataclass(frozen=True)
class AdversarySettings:
    train_attack: PGDConfig | None = None
    attack: str = "pgd"  # how training makes adversarial examples: choices.TRAIN_ATTACKS
    free_replays: int = 4
    eval_attack: PGDConfig | None = None  # the test's attack (validation: runtime.val_steps)
    overfit_guard: str = "auto"  # "auto": "stop" for the single-step kinds, "off" for pgd

    def __post_init__(self):
        for name in ("train_attack", "eval_attack"):
            object.__setattr__(self, name, PGDConfig.coerce(getattr(self, name), name))

    @property
    def training_attack(self):
        """The training attack as the one value the classifier takes (``run_config.json`` keeps
        its three settings as they always were)."""
        return TrainingAttack(self.attack, self.train_attack, self.free_replays)


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    epochs: int = 10
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    weight_decay_type: str = "decoupled"  # choices.WEIGHT_DECAY_TYPES; the PyTorch recipes': l2
    schedule: str = "cosine"
    lr_boundaries: tuple = ()
    lr_decay: float = 0.1
    ema_momentum: float = 0.0  # weight averaging (RobustClassifier's ema_momentum); 0: off


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How a run goes; all of it may change between a run and its resumption."""

    strategy: str = "auto"
    tpu: str | None = None
    jit_compile: bool = False
    checkpoint_steps: int = 0  # 0: at the end of each epoch only
    overwrite: bool = False
    verbose: int | str = "auto"
    export: bool = True  # write export/ (a SavedModel for serving) beside model.keras
    # Validation (best epoch, overfitting guard): PGD with val_steps steps (None: the test
    # attack's), every validate_every epochs and at the last, on val_examples of the split.
    val_steps: int | None = None
    validate_every: int = 1
    val_examples: int | None = None


GROUPS = {
    "model": ModelSettings, "objective": ObjectiveSettings, "adversary": AdversarySettings,
    "optimizer": OptimizerSettings, "runtime": Runtime,
}
# Each flat setting's group.
_GROUP_OF = {field.name: group for group, kind in GROUPS.items() for field in dataclasses.fields(kind)}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    data: DataConfig
    model: ModelSettings = ModelSettings()
    objective: ObjectiveSettings = ObjectiveSettings()
    adversary: AdversarySettings = AdversarySettings()
    optimizer: OptimizerSettings = OptimizerSettings()
    runtime: Runtime = Runtime()
    deterministic: bool = False

    @property
    def seed(self) -> int:
        """The run's one seed: the data's split and order, the weights, the attacks' draws."""
        return self.data.seed

    @classmethod
    def from_flat(cls, **values):
        """A config from flat settings (``run_config.json``'s keys); ``data`` may be a dict.
        A top-level ``seed`` is the run's, and so the data's."""
        top = {name: values.pop(name) for name in ("model_dir", "data", "deterministic") if name in values}
        seed = values.pop("seed", None)
        unknown = sorted(set(values) - set(_GROUP_OF))
        if unknown:
            raise TypeError(f"TrainConfig has no setting {', '.join(unknown)}")
        if isinstance(top.get("data"), dict):
            top["data"] = DataConfig(**top["data"])
        if seed is not None and "data" in top:
            top["data"] = dataclasses.replace(top["data"], seed=seed)
        groups = {group: {} for group in GROUPS}
        for name, value in values.items():
            groups[_GROUP_OF[name]][name] = tuple(value) if name == "lr_boundaries" else value
        return cls(**top, **{group: GROUPS[group](**settings) for group, settings in groups.items()})

    def flat(self):
        """The flat, JSON-ready form: one key per setting, as ``run_config.json`` holds it."""
        values = {"model_dir": self.model_dir, "data": dataclasses.asdict(self.data)}
        for group in GROUPS:
            values.update(dataclasses.asdict(getattr(self, group)))
        values.update(seed=self.seed, deterministic=self.deterministic,
                      lr_boundaries=list(self.optimizer.lr_boundaries))
        return values

    def replace(self, **flat):
        """This config with some flat settings changed (``method="pat"``, ``data=...``)."""
        values = self.flat()
        values["data"] = self.data
        if "data" in flat and "seed" not in flat:
            values.pop("seed")  # the new data's seed is the run's
        values.update(flat)
        return TrainConfig.from_flat(**values)

    @classmethod
    def from_settings(cls, settings):
        """A config from the training command's settings (``options.settings``: ``{path: value}``,
        the data's and the attacks' paths dotted). The attacks are made as the adversary says:
        the training attack by its kind (``TrainingAttack.make``: the kind's default step, one
        step for the single-step kinds; none for a method that trains on clean examples only),
        the test attack at the training eps unless its own is given, with its default step."""
        flat, nested = {}, {"data": {}, "train_attack": {}, "eval_attack": {}}
        for path, value in settings.items():
            head, _, rest = path.partition(".")
            if rest:
                nested[head][rest] = value
            else:
                flat[path] = value
        train, test = nested["train_attack"], nested["eval_attack"]
        adversarial = OBJECTIVES[flat["method"]].adversarial
        train_attack = TrainingAttack.make(flat["attack"], **train).config if adversarial else None
        test_attack = evaluation(test.pop("eps") or train["eps"], **test)
        return cls.from_flat(**flat, data=nested["data"], train_attack=train_attack, eval_attack=test_attack)

    @staticmethod
    def flag_differences(saved, current):
        """``["`batch_size`: 128 then, 8 now", ...]``: the settings that differ between two
        ``identity`` dicts, named by the training command's flags."""
        return options.differences(saved, current)

    def identity(self):
        """The flat settings that must be the same for a run to resume: all but the runtime's
        and the directory's (a run moved elsewhere resumes there)."""
        runtime = {field.name for field in dataclasses.fields(Runtime)} | {"model_dir"}
        return {k: v for k, v in self.flat().items() if k not in runtime}


def runtime_settings():
    """The flat names of the settings that may change when a run resumes."""
    return tuple(field.name for field in dataclasses.fields(Runtime))
