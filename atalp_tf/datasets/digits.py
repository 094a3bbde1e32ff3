"""scikit-learn's bundled handwritten digits: real images that need no download.

1,797 grayscale 8x8 images of the digits 0-9 (the UCI optdigits test set), shipped inside the
scikit-learn wheel, so the quickstart runs on a machine with no network.
"""

import numpy as np

NUM_CLASSES = 10
CLASS_NAMES = tuple(str(d) for d in range(10))


def load_arrays():
    """All images as float32 ``[N, 8, 8, 1]`` in [0, 1] and int32 labels ``[N]``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "The 'digits' dataset comes with scikit-learn: pip install scikit-learn"
        ) from error
    digits = load_digits()
    # Pixel values are counts from 0 to 16 (a 4x4 block of a 32x32 bitmap).
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    return images, digits.target.astype(np.int32)
