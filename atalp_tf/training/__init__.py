"""One training run: its configuration, its stages, its resumable state, and what watches it.

* ``config``: ``TrainConfig``, in groups (data, model, objective, adversary, optimizer, and
  runtime: what may change when a run resumes); ``run_config.json`` keeps its flat form;
* ``trainer``: the run in named stages, from a ``TrainConfig`` to checkpoints, logs and results;
* ``resume``: the state a run resumes from: saving, verifying and falling back, the mid-epoch
  split of the remaining training;
* ``callbacks``: what watches a run: checkpoints to resume from and the NaN stop, the last and
  best models, catastrophic overfitting, and the per-epoch progress line.

The run directory, loading and the export: ``atalp_tf.runs``.
"""
