"""Evaluating a model: ``evaluate`` (``atalp_tf.evaluate``) for a model and data in memory, and
the work behind ``python -m atalp_tf.evaluate``, which runs the same plan.

``evaluate_path`` finds the model (a ``.keras`` file, a run's directory or its export), its
data (the run's own test split unless another dataset is named) and its eps (the eps the run
trained at unless given), builds the plan, and evaluates into a directory with
``report.evaluate_into``, the same function the reproduce suites use.
"""

from collections.abc import Sequence
import math
import os

import keras
import numpy as np
import tensorflow as tf

from atalp_tf import pixels
from atalp_tf.choices import ATTACKS
from atalp_tf.choices import DEFAULT_ATTACKS
from atalp_tf.errors import MissingPath
from atalp_tf.errors import OutputExists
from atalp_tf.errors import UserError
from atalp_tf.evaluation import plan
from atalp_tf.evaluation import report
from atalp_tf.evaluation import robustness
from atalp_tf.runs.loading import check_classifier
from atalp_tf.runs.loading import load_classifier
from atalp_tf.runs.loading import model_shape
from atalp_tf.runs.rundir import RunDir
from atalp_tf.runs.rundir import locate
from atalp_tf.runs.rundir import writing_into

# Without a run to take it from, the evaluation's eps is the paper's CIFAR-10 one.
DEFAULT_EPS = 8 / 255
DEFAULT_STEPS = (10, 20, 50)


def _batches(data, batch_size, num_examples):
    """``(batches, count of batches or None)`` of the first ``num_examples`` of ``data``."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0], np.float32), np.asarray(data[1])
        if len(images) != len(labels) or images.ndim != 4:
            raise ValueError(
                "`data` as arrays must be (images [N, H, W, C] pixels in [0, 1], labels [N]); received "
                f"images of shape {images.shape} and {len(labels)} labels"
            )
        count = len(images) if num_examples is None else min(num_examples, len(images))
        dataset = tf.data.Dataset.from_tensor_slices((images[:count], labels[:count])).batch(batch_size)
        return dataset, math.ceil(count / batch_size)
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            "`data` must be (images, labels) arrays or a tf.data.Dataset of (images, labels), batched or "
            f"not, with pixels in [0, 1]. Received: {type(data).__name__}"
        )
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(f"`data` must yield (images, labels) pairs; its elements are {spec}")
    if spec[0].shape.rank == 4:
        data = data.unbatch()
    if num_examples is not None:
        data = data.take(num_examples)
    data = data.map(lambda images, labels, *_: (images, labels)).batch(batch_size)
    count = int(data.cardinality())
    if count < 0 and num_examples is not None:
        # Unknown after unbatch: the progress lines count on num_examples (at most that many).
        count = math.ceil(num_examples / batch_size)
    return data, count if count >= 0 else None


def evaluate(model: keras.Model, data, *, eps: float | Sequence[float] = DEFAULT_EPS,
             attacks: Sequence[str] = DEFAULT_ATTACKS, steps: Sequence[int] = DEFAULT_STEPS, restarts: int = 1,
             step_size: float | None = None, queries: int = 1000, num_targets: int = 9, seed: int = 0,
             source: keras.Model | None = None, batch_size: int = 100, num_examples: int | None = None,
             eot_samples: int | None = None, bpda: Sequence[str] = (), log=None,
             context: dict | None = None) -> report.Evaluation:
    """Attacks ``model`` on ``data`` and returns an ``Evaluation``: per-attack and worst-case
    accuracy per eps, per-example outcomes and the checks, the plan ``python -m atalp_tf.evaluate``
    runs.

    Args:
        model: a ``RobustClassifier`` or any Keras classifier from pixels in [0, 1] to logits
            (or probabilities, which are attacked through their logarithm).
        data: ``(images, labels)`` arrays, or a ``tf.data.Dataset`` of such pairs (batched or not).
        eps: L-inf radius in [0, 1] pixel units (8/255 is CIFAR-10's), or a list of them.
        attacks: names from ``atalp_tf.choices.ATTACKS``; ``"autoattack"`` is the standard one.
        steps: PGD iteration counts (the other gradient attacks take the largest).
        restarts, step_size, queries, num_targets: as the command's flags of those names.
        source: a model to make black-box (transfer) FGSM and PGD on.
        num_examples: evaluate the first N examples (None: all).
        eot_samples: draws a randomised model is averaged over (None: 20 if its outputs are
            random, else 1).
        bpda: names of input-transformation layers the gradient attacks differentiate as the
            identity.
        log: a callable taking each progress line (None: quiet).
    """
    eps_values = [float(eps)] if isinstance(eps, (int, float)) else [float(e) for e in eps]
    if not eps_values or not all(0 < e <= 1 for e in eps_values):
        raise ValueError(f"`eps` must be radii in (0, 1] pixel units (8/255, not 8). Received: eps={eps!r}")
    unknown = [name for name in attacks if name not in ATTACKS]
    if isinstance(attacks, str) or not attacks or unknown:
        raise ValueError(f"`attacks` must name attacks from {ATTACKS}. Received: attacks={attacks!r}")
    if not steps or not all(int(s) == s and s > 0 for s in steps):
        raise ValueError(f"`steps` must be positive integers. Received: steps={steps!r}")
    model = robustness.straight_through(model, bpda)
    num_classes, _ = model_shape(model)
    batches, num_batches = _batches(data, batch_size, num_examples)
    specs = plan.plan(
        eps_values, sorted({int(s) for s in steps}), list(attacks), restarts=restarts, step_size=step_size,
        queries=queries, num_targets=num_targets, transfer=source is not None, num_classes=num_classes,
    )
    context = dict(context or {}, seed=seed, pixel_range=[0.0, 1.0])
    return report.run(
        robustness.logits_of(model), batches, specs,
        source=robustness.logits_of(source) if source is not None else None, seed=seed,
        num_classes=num_classes, num_batches=num_batches, context=context, log=log, eot_samples=eot_samples,
    )


def evaluation_data(located, image_shape, *, dataset=None, data_dir=None, image_size=None, batch_size=100):
    """``(DataConfig, Splits)`` to evaluate ``located``'s model on: ``dataset`` when given, else
    the run's own data."""
    from atalp_tf import datasets

    overrides = dict(batch_size=batch_size, image_size=image_size or image_shape[0])
    if dataset:
        config = datasets.DataConfig(name=dataset, data_dir=data_dir, **overrides)
    elif located.run_dir:
        config = RunDir(located.run_dir).data_config(data_dir=data_dir, **overrides)
    else:
        raise MissingPath(f"{located.model_file} is not inside a training model_dir: name the data with `dataset`")
    return config, datasets.load(config)


def evaluate_path(model_path, *, checkpoint="final", out_dir=None, overwrite=False, eps=None, steps=DEFAULT_STEPS,
                  attacks=None, restarts=1, step_size=None, queries=1000, num_targets=9, seed=0,
                  source_path=None, source_checkpoint="final", dataset=None, data_dir=None, image_size=None,
                  split="test", num_examples=500, batch_size=100, bpda=(), eot_samples=None, log=print):
    """Evaluates the model ``model_path`` names into ``out_dir`` (default the run's
    ``evaluation/``); returns the names written. Refuses to replace an earlier evaluation
    unless ``overwrite``. ``eot_samples``: draws a randomised model is averaged over (None: 20
    when its outputs are random, 1: never)."""
    located = locate(model_path, checkpoint)
    if not out_dir and located.run_dir is None:
        raise UserError("`out_dir` is needed when `model` is not inside a training model_dir")
    out_dir = out_dir or RunDir(located.run_dir).evaluation_dir()
    # A run's evaluation is written under its lock, held from the start: a run still
    # training there is not evaluated half-way.
    with writing_into(out_dir, "atalp_tf.evaluate"):
        existing = [n for n in report.OUTPUTS if os.path.exists(os.path.join(out_dir, n))]
        if existing and not overwrite:
            raise OutputExists(
                f"{out_dir} already holds {', '.join(existing)}; pass `overwrite=True` or another `out_dir`"
            )
        trained_at = RunDir(located.run_dir).training_eps() if located.run_dir else None
        if not eps:
            eps = [trained_at or DEFAULT_EPS]
            reason = "the eps the run trained at" if trained_at else "no run to take it from"
            log(f"eps {pixels.both(eps[0])} ({reason}; `eps` sets others)")
        model = load_classifier(located.model_file)
        _, image_shape = model_shape(model)
        data_config, data = evaluation_data(
            located, image_shape, dataset=dataset, data_dir=data_dir, image_size=image_size,
        )
        check_classifier(model, located.model_file, num_classes=data.num_classes, image_shape=data.image_shape)
        source = source_file = None
        if source_path:
            source_file = locate(source_path, source_checkpoint).model_file
            source = load_classifier(source_file, num_classes=data.num_classes, image_shape=data.image_shape)
        context = dict(
            model=located.model_file, source_model=source_file, dataset=data_config.name, split=split,
            class_names=list(data.class_names),
        )
        title = f"model {located.model_file}" + (f", black-box source {source_file}" if source_file else "")
        evaluation = evaluate(
            model, data.test if split == "test" else data.val, eps=eps, attacks=attacks or DEFAULT_ATTACKS,
            steps=steps, restarts=restarts, step_size=step_size, queries=queries, num_targets=num_targets,
            seed=seed, source=source, batch_size=batch_size, num_examples=min(num_examples, data.sizes[split]),
            eot_samples=eot_samples, bpda=bpda, log=log, context=context,
        )
        for line in evaluation.table(title).splitlines():
            log(line)
        written = evaluation.write(out_dir, log=log)
        return [os.path.join(out_dir, name) for name in written]
