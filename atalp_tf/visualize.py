r"""Look inside trained models: ``python -m atalp_tf.visualize COMMAND --models=a.keras[,b.keras]``.

Commands:

* ``attention``: per image, a PNG grid of the image, its PGD version and the attention map of
  each stage (conv2..conv5) for clean and adversarial input, one pair of rows per model;
  the maps also go to ``attention.npz``.
* ``parts``: with ``--mask_dir`` (a mask image named like each input, white on the
  discriminative parts), the share of each stage's attention inside the mask, averaged over
  the images, for clean and adversarial input: a table, ``parts.json`` and ``parts.csv``.
* ``landscape``: the loss around each image along the sign of its input gradient and a
  Rademacher direction: ``landscape_<image>.csv`` per model and a PNG surface.

Adversarial examples are untargeted PGD against each model itself (gray-box), with ``--eps``
and ``--steps``, away from the true class given by ``--labels``; without ``--labels``, away
from the first model's prediction (the landscape's loss uses the same label). PNGs need
matplotlib; without it the command says how to install it and still writes the CSV, JSON and
NPZ files.
"""

import os

from absl import app
from absl import flags

from atalp_tf import cli
from atalp_tf.cli import DEFINE_pixel_value

COMMANDS = ("attention", "parts", "landscape")

_MODELS = flags.DEFINE_list(
    "models", None, "Comma-separated models to compare: .keras files or training model_dirs.", required=True
)
_NAMES = flags.DEFINE_list("names", None, "Names of the models in the figures (default: file names).")
_IMAGES = flags.DEFINE_list("images", [], "Image files to look at.")
_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Or a directory of images (sorted by name).")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 8, "At most this many images from --image_dir.", lower_bound=1)
_LABELS = flags.DEFINE_list(
    "labels", [], "True classes of the images, in order, as ids or as the run's class names (optional)."
)
_MASK_DIR = flags.DEFINE_string("mask_dir", None, "parts: masks named like the images.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the files.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace files already in --out_dir.")
_EPS = DEFINE_pixel_value("eps", "8/255", "PGD perturbation size (L-inf).")
_STEP_SIZE = DEFINE_pixel_value("step_size", None, "PGD step (default eps / 4).")
_STEPS = flags.DEFINE_integer("steps", 20, "PGD steps.", lower_bound=1)
_RADIUS = DEFINE_pixel_value("radius", "16/255", "landscape: largest offset along each direction.")
_GRID = flags.DEFINE_integer("grid", 21, "landscape: points per direction (odd: centre included).", lower_bound=3)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of PGD's random start and the Rademacher direction.")

_GROUPS = {
    "models and images": ["models", "names", "images", "image_dir", "max_images", "labels", "mask_dir"],
    "attack (attention, parts)": ["eps", "step_size", "steps", "seed"],
    "landscape": ["radius", "grid"],
    "output": ["out_dir", "overwrite"],
}


cli.require_existing("models", "path", "list existing .keras files or training model_dirs", required=True)
cli.require_existing("images", "file", "list existing image files")
cli.require_existing("image_dir", "directory", "be an existing directory")
cli.require_existing("mask_dir", "directory", "be an existing directory")


def _visualize(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"Give one command: {', '.join(COMMANDS)}. Received: {argv[1:]}")
    from atalp_tf.inspection import pictures

    session = pictures.Session.open(
        _MODELS.value, pictures.image_paths(_IMAGES.value, _IMAGE_DIR.value, _MAX_IMAGES.value),
        labels=_LABELS.value, names=_NAMES.value, eps=_EPS.value, step_size=_STEP_SIZE.value,
        steps=_STEPS.value, seed=_SEED.value, out_dir=_OUT_DIR.value, overwrite=_OVERWRITE.value,
    )
    if argv[1] == "attention":
        written = session.attention()
    elif argv[1] == "parts":
        written = session.parts(_MASK_DIR.value)
    else:
        written = session.landscape(radius=_RADIUS.value, grid=_GRID.value)
    print("Wrote " + ", ".join(os.path.join(_OUT_DIR.value, w) for w in written))


if __name__ == "__main__":
    app.run(cli.command("atalp_tf.visualize", _visualize, __doc__, _GROUPS))
