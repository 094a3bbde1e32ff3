"""One training run in named stages, from a ``TrainConfig`` to checkpoints, logs and results.

The command line (``atalp_tf.train``) only turns flags into a ``TrainConfig``; everything
else lives here so it can be called from Python and tested without a subprocess. ``run``
goes through:

1. the distribution strategy (a multi-worker one before any other TensorFlow operation), and
   the directory's lock, held to the end (the chief's);
2. the plan for the run directory (``rundir.plan``: new, resume or replace; nothing written);
3. the data; 4. the model, with its pretrained weights, and its optimizer; the checkpoint to
   resume from is restored (``training.resume``);
5. only then the directory is claimed (``rundir.claim``), so that a run that cannot start
   leaves nothing behind that blocks the corrected command; the drawn split is saved;
6. training, from where the run stands (``_train``);
7. the test of the last and the best epoch's models, from the same random starts (``_test``);
8. ``model.keras``, the serving export and, last, ``results.json`` (``_leave``).

A run stopped anywhere (killed, out of disk, Ctrl-C) resumes from its newest checkpoint and
redoes what came after it: nothing counts as done before ``results.json`` says so. What each
file of the run directory is: ``atalp_tf.runs.rundir``.
"""

import contextlib
import dataclasses
import math
import os
import re
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from atalp_tf import atomic
from atalp_tf import choices
from atalp_tf import datasets
from atalp_tf import optimizers
from atalp_tf import pixels
from atalp_tf.attacks.pgd import PGDConfig
from atalp_tf.datasets.pipeline import CENTRE_CROP_FRACTION
from atalp_tf.errors import DataError
from atalp_tf.errors import Interrupted
from atalp_tf.errors import UserError
from atalp_tf.models import backbones
from atalp_tf.models.classifier import RobustClassifier
from atalp_tf.runs import rundir
from atalp_tf.runs.export import export_serving
from atalp_tf.runs.loading import load_classifier
from atalp_tf.runs.rundir import RunDir
from atalp_tf.training import callbacks as watch
from atalp_tf.training.config import TrainConfig
from atalp_tf.training.resume import Resume


def make_strategy(name, tpu=None):
    """``auto``: MirroredStrategy over the visible GPUs, the default strategy without any.

    ``multi_worker`` reads the cluster from ``TF_CONFIG``; it must be made before any other
    TensorFlow operation runs. ``tpu`` connects to the TPU named by ``tpu``.
    """
    if name not in choices.STRATEGIES:
        raise ValueError(f"`strategy` must be one of {choices.STRATEGIES}. Received: strategy={name!r}")
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "mirrored" or (name == "auto" and tf.config.list_physical_devices("GPU")):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes files: the only one, the chief, or worker 0 without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def build_model(config, num_classes, image_shape):
    """The backbone of ``config`` wrapped in a ``RobustClassifier`` (call inside a scope)."""
    model, objective, adversary = config.model, config.objective, config.adversary
    backbone = backbones.build(
        model.architecture, num_classes, image_shape, weights=model.weights, width=model.width,
        synchronized_bn=model.synchronized_bn,
    )
    coupled = config.optimizer.weight_decay if config.optimizer.weight_decay_type == "l2" else 0.0
    return RobustClassifier(
        backbone, method=objective.method, alpha=objective.alpha, beta=objective.beta,
        trades_beta=objective.trades_beta, clean_ce_weight=objective.clean_ce_weight,
        bn_batches=objective.bn_batches, attack=adversary.training_attack, eval_attack=adversary.eval_attack,
        seed=config.seed, weight_decay=coupled, ema_momentum=config.optimizer.ema_momentum,
    )


def build_optimizer(config, steps_per_epoch):
    """The optimizer and learning-rate schedule of ``config`` (call inside a scope)."""
    settings = config.optimizer
    schedule = optimizers.learning_rate_schedule(
        settings.learning_rate, schedule=settings.schedule, steps_per_epoch=steps_per_epoch,
        epochs=settings.epochs, boundaries=settings.lr_boundaries, decay_factor=settings.lr_decay,
    )
    decoupled = settings.weight_decay if settings.weight_decay_type == "decoupled" else 0.0
    return optimizers.build_optimizer(settings.optimizer, schedule, weight_decay=decoupled, momentum=settings.momentum)


def _guard(config):
    """The catastrophic-overfitting guard of ``config``, or None."""
    action = config.adversary.overfit_guard
    if action not in choices.OVERFIT_GUARDS:
        raise ValueError(f"`overfit_guard` must be one of {choices.OVERFIT_GUARDS}. Received: {action!r}")
    if action == "auto":
        single_step = config.adversary.training_attack.single_step and choices.OBJECTIVES[
            config.objective.method].adversarial
        action = "stop" if single_step else "off"
    if action == "off":
        return None
    if config.adversary.eval_attack is None:
        raise ValueError(f"overfit_guard={action!r} watches validation PGD accuracy: set `eval_attack`")
    return watch.CatastrophicOverfittingGuard(action=action)


def evaluate(model, dataset, seed):
    """Test metrics of ``model``, its attack's random starts drawn from ``seed`` whatever the
    generator's state, so that identical weights give identical numbers."""
    generator = model.seed_generator
    kept = generator.state.numpy()
    generator.state.assign(keras.random.SeedGenerator(seed).state.numpy())
    try:
        results = model.evaluate(dataset, verbose=0, return_dict=True)
    finally:
        generator.state.assign(kept)
    return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in results.items()}


def describe_run(config, data, model, resume_point=None):
    """The lines a run prints before it starts: what it trains, on what, where; ``resume_point``:
    the (1-based epoch, batch) it resumes from."""
    method, adversary, settings = config.objective.method, config.adversary, config.model
    if not choices.OBJECTIVES[method].adversarial:
        objective = "standard training (no attack)"
    else:
        attack = adversary.train_attack
        objective = (
            f"{method} with {adversary.training_attack.describe()} at eps {pixels.fraction(attack.eps)}, "
            f"step {pixels.fraction(attack.step_size)}"
        )
    names = ", ".join(data.class_names[:6]) + (", ..." if len(data.class_names) > 6 else "")
    sizes = ", ".join(f"{data.sizes[p]} {p}" for p in ("train", "val", "test"))
    shape = "x".join(str(d) for d in data.image_shape)
    parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    optimizer = config.optimizer
    lines = [
        f"Training {objective}, {optimizer.epochs} epochs, into {config.model_dir}",
        f"  data:  {config.data.name}, {data.num_classes} classes ({names}); {sizes}; {shape}",
        f"  model: {settings.architecture}"
        + (f" width {settings.width}" if settings.architecture == "resnet18" else "")
        + f", {parameters:,} trainable parameters;"
        + f" {optimizer.optimizer} lr {optimizer.learning_rate:g} {optimizer.schedule}"
        + (f"; weights averaged (momentum {optimizer.ema_momentum:g})" if optimizer.ema_momentum else ""),
    ]
    lines += [f"  note:  {note}" for note in data.notes]
    if resume_point:
        epoch, step = resume_point
        lines.append(f"  resuming from epoch {epoch}, step {step}")
    return lines


def run(config: TrainConfig, log=print, callbacks=()) -> dict:
    """Trains (or resumes), evaluates and exports; returns the dict written to ``results.json``.

    The stages are those of the module's docstring. ``log`` receives the lines a user should
    see (the summary at the start, what was replaced, a resume point, a line per epoch);
    ``callbacks`` are more Keras callbacks for ``fit`` (a benchmark's timer, say).
    """
    if config.model.precision not in choices.PRECISIONS:
        raise ValueError(f"`precision` must be one of {choices.PRECISIONS}. Received: {config.model.precision!r}")
    # 1. A multi-worker strategy must exist before any other TensorFlow operation runs.
    strategy = make_strategy(config.runtime.strategy, config.runtime.tpu)
    chief = is_chief(strategy)
    run_dir = RunDir(config.model_dir)
    # Workers read the chief's checkpoints (model_dir is on storage all can see) and write
    # what every worker must save collectively to a scratch directory; only the chief locks.
    with run_dir.lock(" ".join(sys.argv)[:300]) if chief else contextlib.nullcontext():
        plan = rundir.plan(config) if chief else rundir.Plan("resume" if run_dir.has_checkpoint() else "new")
        data = _data(config, run_dir, plan)
        with strategy.scope():
            model, state = _model(config, data)
        out = run_dir if chief else RunDir(tempfile.mkdtemp(prefix="atalp_worker_"))
        resume = Resume(run_dir, state.checkpoint, steps_per_epoch=data.train_stream.steps_per_epoch,
                        updates_per_batch=model.updates_per_batch, into=out)
        if plan.resumes:
            resume.restore(data, log)
        _same_start(strategy, watch.global_step(model))
        if chief:
            rundir.claim(config, plan, log)
            atomic.stop_point("claimed")
            data = datasets.save_split(data, out.file(RunDir.SPLIT))
        resume.start(data)
        if chief:
            position = resume.position(resume.restored) if resume.restored is not None else None
            for line in describe_run(config, data, model, position):
                log(line)
        guard = _train(config, data, model, state, resume, out, strategy, log, callbacks)
        results = _test(config, data, model, state, guard, plan, out, strategy)
        if not chief:
            shutil.rmtree(out.path, ignore_errors=True)
            return results
        return _leave(config, data, model, results, out)


class WorkerLost(UserError, ConnectionError):
    """Another worker of a multi-worker run stopped (killed, preempted)."""


def _same_start(strategy, step):
    """Checks that every worker resumes from optimizer step ``step``: workers that start from
    different steps (a --model_dir that is not the same shared folder for all) would pair up
    their collective operations wrongly and fail with an obscure message, or hang."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    value = tf.constant([step, step * step], tf.float64)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: value), axis=None).numpy()
    replicas = strategy.num_replicas_in_sync
    # Equal sums of the steps and of their squares to n copies of ours: every step is ours.
    if not np.allclose(total, [replicas * step, replicas * step * step]):
        raise UserError(
            f"The workers of this run resume from different steps (this one from step {step}); "
            "every worker must be given the same `model_dir`, on storage they all see"
        )


@dataclasses.dataclass
class _State:
    """What the resumable checkpoint holds beside the model and optimizer."""

    checkpoint: tf.train.Checkpoint
    best_score: tf.Variable
    best_epoch: tf.Variable


def _data(config, run_dir, plan):
    """3. The data: a resumed run reads the split it saved; a new one draws it (saved once the
    run starts). The seeds are set first, so that the draw is the seed's."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.model.precision)
    data = datasets.load(config.data, saved_split=run_dir.file(RunDir.SPLIT) if plan.resumes else None)
    if config.model.num_classes and config.model.num_classes != data.num_classes:
        raise DataError(
            f"The model is set up for {config.model.num_classes} classes (`num_classes`) but dataset "
            f"{config.data.name!r} has {data.num_classes}: {', '.join(data.class_names)}"
        )
    return data


def _model(config, data):
    """4. The model, its weights and optimizer, and the checkpoint of all a resume needs
    (call inside the strategy's scope)."""
    model = build_model(config, data.num_classes, data.image_shape)
    model.compile(
        optimizer=build_optimizer(config, data.train_stream.steps_per_epoch * model.updates_per_batch),
        jit_compile=config.runtime.jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    best_score = tf.Variable(-math.inf, trainable=False, dtype=tf.float64)
    best_epoch = tf.Variable(0, trainable=False, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(
        model=model,
        optimizer=model.optimizer,
        # The attack's random-start generator is not tracked through the model.
        attack_seed=model.seed_generator.state.value,
        best_score=best_score,
        best_epoch=best_epoch,
        # Nor are the weights' moving averages (weight averaging; none without it).
        **({"averages": [average.value for average in model.averages]} if model.averages else {}),
    )
    return model, _State(checkpoint, best_score, best_epoch)


def _train(config, data, model, state, resume, out, strategy, log, callbacks):
    """6. Training from where the run stands; returns the overfitting guard (or None)."""
    runtime, epochs = config.runtime, config.optimizer.epochs
    os.makedirs(out.file(RunDir.CHECKPOINTS), exist_ok=True)
    guard = _guard(config)
    watchers = [
        # First: validation sees the averaged weights before anything reads its figures.
        watch.ValidateAveraged(),
        *callbacks,
        # Before the saves, so that a stop on collapse saves the restored weights.
        *([guard] if guard else []),
        watch.SaveModel(out.model_file("last")),
        watch.SaveModel(out.model_file("best"), _best_monitor(config), state.best_score, state.best_epoch),
        # Last: a checkpoint comes after the epoch's model files, so a resume redoes them.
        watch.ResumeCheckpoint(resume, runtime.checkpoint_steps),
    ]
    if is_chief(strategy):
        watchers.append(keras.callbacks.TensorBoard(out.file(RunDir.LOGS)))
        if runtime.verbose != 0:
            live = None if runtime.verbose == "auto" else runtime.verbose == 1
            watchers.append(watch.EpochLine(epochs, live=live, write=log))

    # Validation picks the best epoch and feeds the guard: a cheaper attack than the test's,
    # every validate_every epochs and at the last, on a fixed subset if asked.
    validation = data.val
    if runtime.val_examples:
        validation = datasets.fixed_subset(
            validation, runtime.val_examples, data.sizes["val"], config.seed, config.data.batch_size
        )
    test_attack = config.adversary.eval_attack
    if runtime.val_steps and test_attack is not None:
        model.eval_attack = dataclasses.replace(test_attack, steps=runtime.val_steps)
    every = runtime.validate_every
    fit_args = dict(
        validation_data=validation,
        validation_freq=sorted(set(range(every, epochs + 1, every)) | {epochs}),
        verbose=0,  # EpochLine reports instead of Keras' bar
        shuffle=False,  # the stream shuffles itself; Keras' own flag only warns on tf.data
        epochs=epochs,  # (with initial_epoch) keeps the epoch numbers right in a resumed run
    )
    stream = data.train_stream
    try:
        for segment in resume.segments(watch.batches_done(model), epochs):
            if guard and guard.collapse and guard.action == "stop":
                break
            model.fit(
                stream.from_step(segment.first_step, epochs if not segment.one_epoch else segment.initial_epoch + 1),
                initial_epoch=segment.initial_epoch, steps_per_epoch=segment.steps,
                callbacks=watchers + ([watch.StopAfterOneEpoch()] if segment.one_epoch else []), **fit_args,
            )
    except KeyboardInterrupt:
        raise Interrupted(
            f"Stopped. {resume.kept()}; run the same command to resume from it"
        ) from None
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.InternalError) as error:
        # A worker that dies shows as a lost connection or as collectives aborted on missed
        # heartbeats, depending on which op noticed first.
        text = str(error)
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or not (
            isinstance(error, tf.errors.UnavailableError) or "Collective ops is aborted" in text
        ):
            raise
        lost = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", text)))
        raise WorkerLost(
            f"{'Worker ' + ', '.join(lost) if lost else 'Another worker'} of the cluster stopped, so "
            f"this one cannot go on. {resume.kept()}: start every worker again with the same command "
            "and TF_CONFIG, and the run resumes from it"
        ) from None
    # The test (and the saved model) attack with the test attack; Keras keeps the traced test
    # step, so it must be traced again.
    model.eval_attack = test_attack
    model.test_function = None
    return guard


def _best_monitor(config):
    return "val_pgd_accuracy" if config.adversary.eval_attack else "val_clean_accuracy"


def _test(config, data, model, state, guard, plan, out, strategy):
    """7. The test of the last and the best epoch's models, from the same random starts."""
    atomic.stop_point("test")
    results = {
        "config": config.flat(),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "image_shape": list(data.image_shape),
        "split_sizes": data.sizes,
        "split_file": data.split_path,
        "skipped_files": [{"path": p, "reason": r} for p, r in data.skipped],
        "steps": watch.global_step(model),
        "resumed": plan.resumes,
        "catastrophic_overfitting": guard.collapse if guard else None,
        "best_epoch": int(state.best_epoch.numpy()) or None,
        "best_monitor": _best_monitor(config),
    }
    with strategy.scope():
        # Only the weights matter for evaluation; compile() without an optimizer skips
        # restoring the saved optimizer state.
        best = load_classifier(out.model_file("best"))
        best.eval_attack = model.eval_attack
        best.compile()
    with model.averaged_weights():
        results["test_last"] = evaluate(model, data.test, config.seed)
        same = model.holds_weights_of(best)
    # Identical weights give identical figures (``evaluate`` fixes the random starts), so a
    # run whose best epoch was its last is tested once.
    results["best_is_last"] = same
    results["test_best"] = dict(results["test_last"]) if same else evaluate(best, data.test, config.seed)
    return results


def _leave(config, data, model, results, out):
    """8. What the run leaves: ``model.keras``, the export and, last, ``results.json``, which
    marks the run finished. Each is written whole; a run stopped among them redoes them all."""
    with model.averaged_weights():
        with atomic.replacing(out.model_file("final")) as temporary:
            model.save(temporary)
        if config.runtime.export:
            export_serving(
                model, out.file(RunDir.EXPORT), data.image_shape, replace=True, class_names=data.class_names,
                crop_fraction=None if config.data.name in choices.ARRAY_DATASETS else CENTRE_CROP_FRACTION,
            )
    results["model_path"] = out.model_file("final")
    if config.runtime.export:
        results["export_dir"] = out.file(RunDir.EXPORT)
    atomic.write_json(out.file(RunDir.RESULTS), results)
    return results


def summary(results):
    """The lines that close a run: test accuracy of the last and best models, and where
    everything went."""
    eval_attack = PGDConfig.coerce(results["config"]["eval_attack"], "eval_attack")
    attack = (
        f"PGD-{eval_attack.steps} {eval_attack.norm} eps={pixels.both(eval_attack.eps)} "
        f"step={pixels.both(eval_attack.step_size)}"
    )
    best = f"epoch {results['best_epoch']}" if results.get("best_epoch") else "its best"
    lines = [
        "",
        f"Test set ({results['split_sizes']['test']} images), {attack}:",
        f"  {'model':<6} {'clean acc':>10} {'PGD acc':>10}",
    ]
    for name in ("last", "best"):
        scores = results[f"test_{name}"]
        lines.append(f"  {name:<6} {scores['clean_accuracy']:>10.4f} {scores['pgd_accuracy']:>10.4f}")
    if results.get("best_is_last"):
        lines.append(f"  (best: {best} by validation PGD accuracy, the last model's very weights: tested once)")
    else:
        lines.append(f"  (best: {best} by validation PGD accuracy; both attacked from the same random starts)")
    if "model_path" not in results:
        return lines + ["This worker is not the chief: the chief writes the model, export and results."]
    if results["skipped_files"]:
        lines.append(f"Skipped {len(results['skipped_files'])} unreadable file(s) (`bad_images=skip`); "
                     f"they are listed in {RunDir.RESULTS}")
    if results["split_file"]:
        lines.append(f"Split:  {results['split_file']}  (reuse with `split_file`)")
    lines.append(f"Model:  {results['model_path']}")
    if results.get("export_dir"):
        lines.append(f"Export: {results['export_dir']}")
        lines.append("  (signatures serving_default, serve_uint8, serve_bytes: images -> probabilities, class_ids, "
                     "class_names)")
    return lines
