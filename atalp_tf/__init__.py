"""atalp_tf: adversarial training with attention and logit pairing (Li et al. 2022), Keras 3."""

import sys

__version__ = "0.1.0"

# `python -m atalp_tf.<command>` imports this package before the command parses its flags, and
# Python sets argv[0] to "-m" while it does. Importing TensorFlow then would make a mistyped
# flag wait ~5 s for its message, so the commands import what they need after validation.
# Every other `import atalp_tf` loads the Keras classes at once: that registers them, and
# `.keras` files that name them load with no further code.
if sys.argv[:1] != ["-m"]:
    from atalp_tf import attacks  # noqa: F401
    from atalp_tf import backbones  # noqa: F401
    from atalp_tf import losses  # noqa: F401
    from atalp_tf.attacks import PGDConfig  # noqa: F401
    from atalp_tf.model import RobustClassifier  # noqa: F401
    from atalp_tf.preprocessing import CaffePreprocessing  # noqa: F401
