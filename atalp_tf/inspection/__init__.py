"""What a model attends to, and the files that show it.

* ``maps``: per-stage attention maps, the share of attention on object parts (the paper's
  Table 3), loss landscapes, and images and masks loaded as the model sees them;
* ``pictures``: the attention grids, part tables and landscape files of
  ``python -m atalp_tf.visualize``.
"""
