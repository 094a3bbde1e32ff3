"""Robustness a user can trust: the attacks of a plan, the per-example worst case, the checks
that flag a result which may be false, and the reports.

* ``robustness``: ``AttackSpec`` and ``plan``, each attack compiled once and seeded,
  ``evaluate`` into a per-example ``Report``, BPDA for non-differentiable input layers;
* ``checks``: signs that a robust accuracy is overstated (Carlini et al., Athalye et al.);
* ``report``: ``Evaluation``, what every evaluation returns (its table, JSON, CSV and figure,
  written whole into a directory), and ``evaluate_into`` for the suites;
* ``runner``: ``evaluate`` (a model and data in memory: ``atalp_tf.evaluate``) and what
  ``python -m atalp_tf.evaluate`` does with the model a user points at;
* ``callback``: ``RobustnessEvaluation``, that evaluation during a user's own ``fit``.
"""
