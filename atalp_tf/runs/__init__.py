"""What a run leaves on disk, and how every command reads it back.

* ``rundir``: ``RunDir``, the one place the files of a run directory are named; the manifest of
  what the package wrote there (the only files it deletes); the rules for claiming a directory
  (new, resume, replace); ``locate``, the model a user points at;
* ``lock``: the exclusive lock a process holds on a run directory while it writes there;
* ``loading``: reading a saved classifier, checked, and what a classifier is (its class count
  and input shape); the first examples of a run's split;
* ``export``: the serving SavedModel.

Writing whole files or none: ``atalp_tf.atomic``. Importing the package loads nothing:
``rundir`` and ``lock`` need no TensorFlow, so the command lines can check a directory before
they import it.
"""
