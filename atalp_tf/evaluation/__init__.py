"""Robustness a user can trust: the attacks of a plan, the per-example worst case, the checks
that flag a result which may be false, and the reports.

* ``robustness``: ``AttackSpec`` and ``plan``, each attack compiled once and seeded,
  ``evaluate`` into a per-example ``Report``, BPDA for non-differentiable input layers;
* ``checks``: signs that a robust accuracy is overstated (Carlini et al., Athalye et al.);
* ``report``: the terminal table, JSON, CSV and figure, and ``evaluate_into``, the one way a
  model is evaluated into a directory (the command line and the suites use it);
* ``runner``: what ``python -m atalp_tf.evaluate`` does with the model a user points at.
"""
