"""The adversarially trained classifier: a Keras model whose ``train_step`` makes its examples.

``method`` selects the training objective: its loss is in ``atalp_tf.models.objectives`` and
what it needs beside (adversarial examples, a clean half) in ``atalp_tf.choices.OBJECTIVES``.
The methods with a clean and an adversarial half put both through the network in training
mode, in one of two ways (``bn_batches``):

* ``joint``: one batch of 2B, so batch norm normalises both halves with shared statistics,
  as in Kannan et al.'s ALP (the default of alp, at and at_alp);
* ``separate``: two batches of B, each normalised with its own statistics, as TRADES'
  reference runs them (its default). The moving statistics move once per step, by the average
  of the two halves' updates, as far as a joint or a PAT step moves them.

``ema_momentum`` keeps an exponential moving average of the weights, updated after every
optimizer step (``a = m a + (1 - m) w``; the first update copies the weights, as Keras'
optimizer ``use_ema`` does), over the trainable weights and batch norm's moving statistics
together: the reference implementations average the whole state, not the parameters alone
(timm's ``ModelEmaV2``; Gowal et al. 2020 and Rebuffi et al. 2021 keep an averaged network
state beside the averaged parameters), so the averaged model is evaluated with statistics
averaged in the same way. Keras' ``use_ema`` averages the trainable variables only, which would
pair averaged weights with the last step's statistics. ``averaged_weights()`` swaps the averages
in (validation, saving, test, export); a checkpoint holds both, so a resume is exact.

PAT trains on the adversarial batch alone, as Madry et al. do. The attack always runs with
``training=False``. ``weight_decay`` (coupled L2) adds ``weight_decay / 2 * ||w||^2`` over
every trainable weight to the loss, so ``weight_decay * w`` joins the gradient before
momentum, as ``SGD(weight_decay=...)`` does in the PyTorch code of Madry et al. and TRADES;
the optimizer's own ``weight_decay`` is decoupled (``atalp_tf.optimizers``).

``attack`` chooses how the adversarial examples are made, at the same objective (what each
kind means, its default step and its warnings: ``atalp_tf.attacks.training_attack``). With
``free``, each batch is replayed ``free_replays`` times; every replay's one backward pass
gives both the weights' gradient and the input's, so the perturbation climbs by one PGD step
while the weights descend. The perturbation starts uniform in the ball for each batch, not
carried over from the previous batch as in the paper (that would need per-replica state under
tf.distribute). The optimizer takes ``free_replays`` steps per batch, at about the cost of a
PGD-(``free_replays`` - 1) batch; the paper trains for ``1 / free_replays`` of standard
training's epochs. The input gradient is the training loss's, with batch norm in training
mode, as in the paper; it is loss-scaled under mixed precision, unlike the attacks' float32
gradient (``atalp_tf.attacks.core.input_gradient``).
"""

import contextlib
import warnings

import keras
import numpy as np
import tensorflow as tf

from atalp_tf import losses
from atalp_tf.attacks import pgd
from atalp_tf.attacks import training_attack
from atalp_tf.choices import BN_BATCHES
from atalp_tf.choices import CLEAN_CE_METHODS
from atalp_tf.choices import METHODS
from atalp_tf.choices import OBJECTIVES
from atalp_tf.choices import PAIRED_METHODS
from atalp_tf.choices import resolve_bn_batches
from atalp_tf.errors import Advice
from atalp_tf.models import objectives
from atalp_tf.models import stages as stages_lib
from atalp_tf.models.backbones import walk_layers


def network_of(model):
    """The functional network of ``model``: a ``RobustClassifier``'s backbone (its stage
    outputs and logits), or the model itself when it is a plain Keras classifier."""
    return getattr(model, "backbone", model)


class _Untracked:
    """Variables a model refers to without owning them (Keras tracks lists set on a layer)."""

    def __init__(self, variables):
        self.variables = variables


def stages_of(model):
    """The keys of ``model``'s stage feature maps in its network's output (``()`` for a plain
    Keras classifier, or a RobustClassifier given none)."""
    return tuple(getattr(model, "stages", ()))


@keras.saving.register_keras_serializable(package="atalp_tf")
class RobustClassifier(keras.Model):
    """Trains a Keras classifier adversarially.

    Calling the model returns logits. ``train_step`` attacks with ``train_attack`` and
    minimises the loss of ``method``; ``test_step`` reports clean accuracy and accuracy under
    ``eval_attack`` (PGD against the true labels).

    Args:
        model: the classifier: a built functional or Sequential Keras model from pixels in
            [0, 1] (preprocessing inside it) to logits; or a network returning a dict with
            ``logits`` and its stage feature maps (``atalp_tf.models.backbones``).
        method: one of ``METHODS``.
        alpha: weight of logit pairing (``alp``, ``at_alp``).
        beta: weight of attention pairing (``at``, ``at_alp``).
        trades_beta: weight of the KL term (``trades``); 6 in Zhang et al.
        train_attack: ``PGDConfig`` (or its dict) for training; required unless ``standard``.
        eval_attack: ``PGDConfig`` for ``evaluate``; defaults to ``train_attack``.
        seed: seed of the attacks' random starts.
        attack: how ``train_step`` makes its adversarial examples: one of ``TRAIN_ATTACKS``, or
            an ``attacks.training_attack.TrainingAttack`` that holds the kind, its settings and replays
            (then ``train_attack`` and ``free_replays`` stay unset).
        free_replays: how often ``attack="free"`` replays each batch.
        clean_ce_weight: share ``w`` of clean cross-entropy in ``alp``, ``at`` and ``at_alp``.
        bn_batches: ``joint``, ``separate`` or ``auto`` (the method's reference).
        weight_decay: coefficient of the coupled L2 decay (0: none).
        ema_momentum: momentum of the weights' moving average (0: none; 0.999 is usual).
        stages: the layers whose outputs attention pairing compares (``at``, ``at_alp``): a
            list of layer names of ``model`` (nested models included), or a dict from a key to
            a layer name. None: found for keras.applications and keras-hub ResNets; another
            model with an attention method is refused with a list of candidate layers.
    """

    def __init__(
        self,
        model: keras.Model,
        method: str = "at_alp",
        alpha: float = 0.5,
        beta: float = 1.0,
        trades_beta: float = 6.0,
        train_attack: pgd.PGDConfig | dict | None = None,
        eval_attack: pgd.PGDConfig | dict | None = None,
        seed: int | None = None,
        attack: str | training_attack.TrainingAttack = "pgd",
        free_replays: int = 4,
        clean_ce_weight: float = 0.0,
        bn_batches: str = "auto",
        weight_decay: float = 0.0,
        ema_momentum: float = 0.0,
        stages: list[str] | dict[str, str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
        for weight_name, weight in (("alpha", alpha), ("beta", beta), ("trades_beta", trades_beta)):
            if weight < 0:
                raise ValueError(f"`{weight_name}` must be >= 0. Received: {weight_name}={weight}")
        if isinstance(attack, training_attack.TrainingAttack):
            if train_attack is not None or free_replays != 4:
                raise ValueError("`attack` is a TrainingAttack, which holds its settings: leave `train_attack` "
                                 "and `free_replays` unset")
        else:
            attack = training_attack.TrainingAttack(attack, train_attack, free_replays)
        eval_attack = pgd.PGDConfig.coerce(eval_attack, "eval_attack") or attack.config
        if OBJECTIVES[method].adversarial and attack.config is None:
            raise ValueError(f"method={method!r} trains on adversarial examples: pass `train_attack`")
        if not OBJECTIVES[method].adversarial and attack.kind != "pgd":
            raise ValueError(f"method='standard' trains without attacks, so attack={attack.kind!r} would do nothing")
        if not 0 <= clean_ce_weight <= 1:
            raise ValueError(f"`clean_ce_weight` must be in [0, 1]. Received: clean_ce_weight={clean_ce_weight}")
        if clean_ce_weight and method not in CLEAN_CE_METHODS:
            raise ValueError(
                f"`clean_ce_weight` mixes clean cross-entropy into {CLEAN_CE_METHODS}; method={method!r} "
                f"has its own. Received: clean_ce_weight={clean_ce_weight}"
            )
        if bn_batches not in BN_BATCHES:
            raise ValueError(f"`bn_batches` must be one of {BN_BATCHES}. Received: bn_batches={bn_batches!r}")
        if bn_batches == "separate" and method not in PAIRED_METHODS:
            raise ValueError(
                f"`bn_batches` applies to the methods with clean and adversarial halves {PAIRED_METHODS}; "
                f"method={method!r} has one batch. Received: bn_batches={bn_batches!r}"
            )
        if weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}")
        if not 0 <= ema_momentum < 1:
            raise ValueError(f"`ema_momentum` must be in [0, 1). Received: ema_momentum={ema_momentum}")
        # The evaluation attack defaults to the training one, whose step may rightly exceed a
        # PGD step: only the command line, where an evaluation step is chosen, questions it.
        for message in attack.advice() if OBJECTIVES[method].adversarial else []:
            warnings.warn(Advice(message), stacklevel=2)
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a Keras model. Received: model={model!r}")
        if not model.built or not model.inputs:
            raise ValueError(
                f"`model` ({model.name!r}) must be built on an input: create it on a keras.Input, or give "
                "a Sequential model a keras.Input(shape=...) first"
            )
        attention = OBJECTIVES[method].attention
        output = stages_lib.output_of(model)
        if isinstance(output, dict):
            if stages is not None:
                raise ValueError("`stages` is for a model that returns logits; this one returns a dict of its stages")
            if stages_lib.LOGITS not in output:
                raise ValueError(f"A `model` returning a dict needs a 'logits' entry; it has {sorted(output)}")
            self.backbone = model
            self.stage_layers = None
            self.stages = tuple(key for key in output if key != stages_lib.LOGITS)
            if attention and not self.stages:
                raise ValueError(f"method={method!r} pairs attention maps, and `model` returns no stage outputs")
        else:
            stages_lib.check_logits(model)
            self.stage_layers = stages_lib.resolve(model, stages, required=attention)
            self.backbone = stages_lib.network(model, self.stage_layers)
            self.stages = tuple(self.stage_layers)
        self.classifier = model
        # Everything with weights lives in the already-built backbone; without this flag
        # Keras refuses to export a model that `fit` used but never called.
        self.built = True
        self.method = method
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.trades_beta = float(trades_beta)
        self.training_attack = attack
        self.eval_attack = eval_attack
        self.seed = seed
        self.clean_ce_weight = float(clean_ce_weight)
        self.bn_batches = resolve_bn_batches(method, bn_batches)
        self.weight_decay = float(weight_decay)
        self.ema_momentum = float(ema_momentum)
        # What the average covers, fixed when the model is made: the weights training moves.
        # Held outside Keras' tracking: they are the backbone's, saved there.
        self._averaging = _Untracked(
            list(self.backbone.trainable_variables) + self._moving_statistics() if self.ema_momentum else []
        )
        # Replicas hold equal weights; unsynchronised batch norm statistics are averaged.
        self.averages = [
            # A copy: given the variable itself, Keras would wrap the same storage.
            keras.Variable(tf.identity(variable.value), trainable=False, name=f"average_{index}", aggregation="mean")
            for index, variable in enumerate(self._averaged)
        ]
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in objectives.TERMS}
        self._trackers["clean_accuracy"] = keras.metrics.SparseCategoricalAccuracy("clean_accuracy")
        self._trackers["adv_accuracy"] = keras.metrics.SparseCategoricalAccuracy("adv_accuracy")
        self._trackers["pgd_accuracy"] = keras.metrics.SparseCategoricalAccuracy("pgd_accuracy")

    def call(self, inputs, training=False):
        return self.backbone(inputs, training=training)["logits"]

    def _moving_statistics(self):
        """Batch norm's moving means and variances, every layer of the network's."""
        return [
            variable
            for layer in walk_layers(self.backbone)
            if isinstance(layer, keras.layers.BatchNormalization)
            for variable in (layer.moving_mean, layer.moving_variance)
        ]

    @property
    def _averaged(self):
        return self._averaging.variables

    def _update_averages(self):
        # The optimizer counted this step already: its first step copies the weights.
        momentum = tf.where(self.optimizer.iterations > 1, self.ema_momentum, 0.0)
        for average, variable in zip(self.averages, self._averaged):
            average.assign(momentum * average + (1.0 - momentum) * tf.cast(variable.value, average.dtype))

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within the block the model holds the averaged weights (and statistics), then its own
        again; without ``ema_momentum`` it does nothing."""
        if not self.averages:
            yield self
            return
        own = [tf.identity(variable.value) for variable in self._averaged]
        for variable, average in zip(self._averaged, self.averages):
            variable.assign(average.value)
        try:
            yield self
        finally:
            for variable, value in zip(self._averaged, own):
                variable.assign(value)

    def holds_weights_of(self, other):
        """Whether this model's network weights equal ``other``'s, value for value (a run whose
        best epoch was its last saves the same weights twice)."""
        mine, theirs = self.backbone.get_weights(), other.backbone.get_weights()
        return len(mine) == len(theirs) and all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(mine, theirs)
        )

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 reduces a sample batch across replicas here to learn the input shapes,
        # which MultiWorkerMirroredStrategy cannot do for an (images, labels) pair: fit fails
        # before the first step. This model is built from its backbone and compiles no losses
        # or metrics, so the optimizer is all that is left to build.
        del iterator, data_batch
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    @property
    def train_attack(self):
        """The training attack's ``PGDConfig`` (None for ``standard``)."""
        return self.training_attack.config

    @property
    def attack(self):
        """The training attack's kind, one of ``TRAIN_ATTACKS``."""
        return self.training_attack.kind

    @property
    def free_replays(self):
        return self.training_attack.replays

    @property
    def updates_per_batch(self):
        """Optimizer steps per batch: ``free_replays`` for free training, otherwise 1."""
        return self.training_attack.updates_per_batch

    def _inference_logits(self, images):
        return self.backbone(images, training=False)["logits"]

    def adversarial_examples(self, images, labels, config=None):
        """The examples the method trains on for this batch: ``config``'s attack (default the
        training attack's) as the training attack's kind runs it, against the method's attack
        loss."""
        config = config or self.train_attack
        start = None
        if OBJECTIVES[self.method].attack_loss == "kl":
            # TRADES maximises the KL to the clean prediction, not the cross-entropy.
            clean = tf.stop_gradient(self._inference_logits(images))
            loss_fn = lambda logits: losses.trades_kl(clean, logits)  # noqa: E731
            if self.attack == "pgd":
                # The clean point has zero KL gradient, so TRADES starts from x + 0.001 * N(0, 1).
                start = pgd.gaussian_start(images, self.seed_generator)
        else:
            loss_fn = pgd.objective(config, labels)
        return self.training_attack.examples(self._inference_logits, images, loss_fn, config=config,
                                             seed=self.seed_generator, start=start)

    def _per_example_losses(self, images, labels, adv_images, training):
        """Dict of per-example loss terms and the logits they came from (``objectives``)."""
        row = OBJECTIVES[self.method]
        clean = adv = None
        if row.paired:
            clean, adv = self._halves(images, adv_images, training)
        elif row.adversarial:
            adv = self.backbone(adv_images, training=training)
        else:
            clean = self.backbone(images, training=training)
        return objectives.LOSSES[self.method](self, labels, clean, adv)

    def _halves(self, images, adv_images, training):
        """The backbone's outputs (dicts) for the clean and the adversarial half."""
        if self.bn_batches == "separate" and training:
            return self._separate_halves(images, adv_images)
        outputs = self.backbone(tf.concat([images, adv_images], axis=0), training=training)
        clean, adv = {}, {}
        for key, value in outputs.items():
            clean[key], adv[key] = tf.split(value, 2, axis=0)
        return clean, adv

    def _separate_halves(self, images, adv_images):
        # Two passes in training mode, each normalised with its own batch statistics. Each
        # pass would also move the moving statistics; both start from the same values and
        # the step keeps the average of the two updates, so they move once per step.
        moving = self._moving_statistics()
        before = [tf.identity(v.value) for v in moving]
        clean = self.backbone(images, training=True)
        after_clean = [tf.identity(v.value) for v in moving]
        for variable, value in zip(moving, before):
            variable.assign(value)
        adv = self.backbone(adv_images, training=True)
        for variable, value in zip(moving, after_clean):
            variable.assign((variable.value + value) / 2.0)
        return clean, adv

    def _update_metrics(self, terms, labels, logits):
        for name, values in terms.items():
            self._trackers[name].update_state(values)
        for kind, value in logits.items():
            self._trackers[f"{kind}_accuracy"].update_state(labels, value)
        names = list(terms) + [f"{kind}_accuracy" for kind in logits]
        results = {name: self._trackers[name].result() for name in names}
        context = tf.distribute.get_replica_context()
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
            context is not None and context.num_replicas_in_sync > 1
        ):
            # Keras 3.15 averages step outputs across workers along axis 0, which a scalar
            # does not have. Reduced here first, every replica holds the global values, and
            # a length-1 axis leaves Keras' average of equal values unchanged.
            results = context.all_reduce("MEAN", results)
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def _descend(self, images, labels, adv_images, input_gradient=False):
        """One optimizer step on the method's loss; returns its terms, logits and, with
        ``input_gradient``, the loss's gradient with respect to ``adv_images`` (else None)."""
        variables = self.trainable_variables
        input_gradient = input_gradient and adv_images is not None
        with tf.GradientTape() as tape:
            if input_gradient:
                tape.watch(adv_images)
            terms, logits = self._per_example_losses(images, labels, adv_images, training=True)
            # Divide by the *global* batch: under tf.distribute the replicas' gradients are
            # summed, so this is the mean over all examples on any number of devices.
            loss = tf.nn.compute_average_loss(terms["loss"])
            regularization = list(self.losses)
            if self.weight_decay:
                squares = tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
                regularization.append(0.5 * self.weight_decay * squares)
            if regularization:
                # Every replica adds it; scaled so that their sum counts it once.
                loss += tf.nn.scale_regularization_loss(tf.add_n(regularization))
            # Without scale_loss a mixed_float16 run updates the weights 32768x too little.
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables + ([adv_images] if input_gradient else []))
        self.optimizer.apply(gradients[: len(variables)], variables)
        if self.averages:
            self._update_averages()
        return terms, logits, gradients[-1] if input_gradient else None

    def _free_train_step(self, images, labels):
        config = self.train_attack
        images = tf.convert_to_tensor(images, tf.float32)
        adv_images = pgd.random_start(images, config, self.seed_generator)
        # A Python loop: the replays are few, and each holds an optimizer step.
        for _ in range(self.free_replays):
            terms, logits, gradient = self._descend(images, labels, adv_images, input_gradient=True)
            results = self._update_metrics(terms, labels, logits)
            adv_images = pgd.step(adv_images, gradient, images, config)
        return results

    def train_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError("RobustClassifier does not support sample weights")
        if self.attack == "free":
            return self._free_train_step(images, labels)
        adv_images = None
        if OBJECTIVES[self.method].adversarial:
            adv_images = self.adversarial_examples(images, labels, self.train_attack)
        terms, logits, _ = self._descend(images, labels, adv_images)
        return self._update_metrics(terms, labels, logits)

    def test_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits = self._inference_logits(images)
        ce = losses.cross_entropy(labels, logits)
        results = {"loss": ce}
        predictions = {"clean": logits}
        if self.eval_attack is not None:
            adv_images = pgd.attack(self._inference_logits, images, labels, self.eval_attack, seed=self.seed_generator)
            predictions["pgd"] = self._inference_logits(adv_images)
        return self._update_metrics(results, labels, predictions)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.classifier),
                "stages": self.stage_layers,
                "method": self.method,
                "alpha": self.alpha,
                "beta": self.beta,
                "trades_beta": self.trades_beta,
                "train_attack": self.train_attack and self.train_attack.to_dict(),
                "eval_attack": self.eval_attack and self.eval_attack.to_dict(),
                "seed": self.seed,
                "attack": self.attack,
                "free_replays": self.free_replays,
                "clean_ce_weight": self.clean_ce_weight,
                "bn_batches": self.bn_batches,
                "weight_decay": self.weight_decay,
                "ema_momentum": self.ema_momentum,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Files from before any classifier could be given name the dict network "backbone".
        config["model"] = keras.saving.deserialize_keras_object(config.pop("model", None) or config.pop("backbone"))
        # Files from before bn_batches existed trained their halves as one batch.
        config.setdefault("bn_batches", "joint")
        # The step-size warnings were given when the model was first built; a load is not a
        # new choice of step, and repeating them at every load only buries them.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=Advice)
            return cls(**config)
