"""atalp_tf: adversarial training with attention and logit pairing, in Keras 3."""

import setuptools

setuptools.setup(
    name="atalp_tf",
    version="0.1.0",
    description="Adversarially robust image classifiers: AT + ALP and its baselines in Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["atalp_tf", "atalp_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15",
        "absl-py>=2.1",
        # TensorFlow 2.21 no longer installs TensorBoard; the trainer writes its logs.
        "tensorboard>=2.20",
        "numpy>=1.26",
        # The quickstart's offline dataset (handwritten digits) ships inside scikit-learn.
        "scikit-learn>=1.5",
        # Image files are decoded with Pillow; SciPy reads 17 Flowers' datasplits.mat.
        "pillow>=10",
        "scipy>=1.11",
    ],
    extras_require={
        # keras-hub's pretrained ResNets (--architecture=hub:NAME or a preset directory).
        "hub": ["keras-hub>=0.32"],
        "plots": ["matplotlib>=3.8"],
        "tfds": ["tensorflow-datasets>=4.9"],
        # benchmarks/training_throughput.py measures against these peers (never imported by the package).
        # (ART's AutoAttack imports multiprocess.)
        "bench": ["adversarial-robustness-toolbox>=1.20", "multiprocess>=0.70", "foolbox>=3.3"],
        "test": [
            "pytest>=8",
            # The linter .ci/run runs first (its rules: pyproject.toml).
            "ruff>=0.6",
            # Two workers: most of a test's time is TensorFlow's per-op overhead and process
            # start-up, which a second process overlaps on the second core.
            "pytest-xdist>=3.5",
            "tensorflow-datasets>=4.9",
            "matplotlib>=3.8",
            # An independent PGD and AutoAttack to check ours against (tests only).
            "adversarial-robustness-toolbox>=1.20",
            "multiprocess>=0.70",
            # An independent EOT attack for randomised models (tests only).
            "foolbox>=3.3",
            # The keras-hub backbone routes.
            "keras-hub>=0.32",
        ],
    },
)
