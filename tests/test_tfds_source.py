"""tfds:NAME through a real TFDS builder that the test defines and prepares locally."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")

from atalp_tf import datasets  # noqa: E402


class AtalpToyDigits(tfds.core.GeneratorBasedBuilder):
    """Grayscale 12x12 images in 3 classes, with train and test splits only."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(12, 12, 1)),
                "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(0, 40), "test": self._generate_examples(1000, 12)}

    def _generate_examples(self, start, count):
        for i in range(start, start + count):
            image = np.full((12, 12, 1), 20 * (i % 3) + 100, np.uint8)
            yield i, {"image": image, "label": i % 3}


def test_tfds_source_reads_splits_labels_and_makes_rgb(tmp_path):
    config = datasets.DataConfig(
        "tfds:atalp_toy_digits", batch_size=4, data_dir=str(tmp_path), image_size=16
    )
    data = datasets.load(config)
    assert data.class_names == ("a", "b", "c") and data.num_classes == 3
    assert data.sizes == {"train": 36, "val": 4, "test": 12}
    assert data.image_shape == (16, 16, 3)
    images, labels = next(iter(data.test))
    assert images.shape == (4, 16, 16, 3) and images.dtype == "float32"
    # Gray value 100 + 20 * label, the same in all three channels after the RGB conversion.
    expected = (100 + 20 * labels.numpy()) / 255.0
    np.testing.assert_allclose(images.numpy()[:, 5, 5, 0], expected, atol=1e-5)
    np.testing.assert_allclose(images.numpy()[..., 0], images.numpy()[..., 2])
