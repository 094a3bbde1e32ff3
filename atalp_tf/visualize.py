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
from the first model's prediction (the landscape's loss uses the same label). PNGs need matplotlib; without it the command says how to install it and still
writes the CSV, JSON and NPZ files.
"""

import csv
import json
import os
import sys

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


@flags.validator("models", "--models must list existing .keras files or training model_dirs")
def _check_models(paths):
    return bool(paths) and all(os.path.exists(p) for p in paths)


@flags.validator("images", "--images must list existing image files")
def _check_images(paths):
    return all(os.path.isfile(p) for p in paths)


@flags.validator("image_dir", "--image_dir must be an existing directory")
def _check_image_dir(path):
    return path is None or os.path.isdir(path)


@flags.validator("mask_dir", "--mask_dir must be an existing directory")
def _check_mask_dir(path):
    return path is None or os.path.isdir(path)


def _image_paths():
    from atalp_tf.datasets.images import IMAGE_EXTENSIONS

    paths = list(_IMAGES.value)
    if _IMAGE_DIR.value:
        names = sorted(n for n in os.listdir(_IMAGE_DIR.value) if n.lower().endswith(IMAGE_EXTENSIONS))
        paths += [os.path.join(_IMAGE_DIR.value, n) for n in names[: _MAX_IMAGES.value]]
    if not paths:
        raise app.UsageError("Give images with --images or --image_dir")
    if _LABELS.value and len(_LABELS.value) != len(paths):
        raise app.UsageError(f"--labels has {len(_LABELS.value)} labels for {len(paths)} images")
    return paths


def _labels(class_names):
    """``--labels`` as class ids, checked against the models' classes."""
    from atalp_tf.errors import UserError

    ids = []
    for value in _LABELS.value:
        value = value.strip()
        if value.isdigit():
            ids.append(int(value))
        elif value in class_names:
            ids.append(class_names.index(value))
        else:
            raise UserError(
                f"--labels={value}: not a class id or name of these models; their classes are "
                f"{', '.join(f'{i} {n}' for i, n in enumerate(class_names))}"
            )
    wrong = [i for i in ids if i >= len(class_names)]
    if wrong:
        raise UserError(
            f"--labels has class id {wrong[0]}, but the models classify {len(class_names)} classes "
            f"(0 to {len(class_names) - 1})"
        )
    return ids


def _default_name(path):
    """A run's ``<run>/model.keras`` (or ``checkpoints/best.keras``) is named after the run."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in ("model", "last", "best"):
        run = os.path.dirname(os.path.abspath(path))
        if os.path.basename(run) == "checkpoints":
            return f"{os.path.basename(os.path.dirname(run))}_{stem}"
        return os.path.basename(run)
    return stem


def _output(name):
    path = os.path.join(_OUT_DIR.value, name)
    if os.path.exists(path) and not _OVERWRITE.value:
        from atalp_tf.errors import OutputExists

        raise OutputExists(f"{path} exists; pass --overwrite to replace it")
    return path


def _adversarial(model, images, labels):
    import numpy as np

    from atalp_tf.attacks import PGDConfig
    from atalp_tf.attacks import compile_attack

    config = PGDConfig(_EPS.value, _STEP_SIZE.value or _EPS.value / 4, _STEPS.value)
    run = compile_attack(lambda x: model(x, training=False), config, seed=_SEED.value)
    return run(images, labels).numpy().astype(np.float32)


def _attention(models, names, paths, images, labels, stages, class_names, given):
    import numpy as np

    from atalp_tf import inspection
    from atalp_tf import pixels as units
    from atalp_tf import plots

    arrays, rows_per_image = {}, [[] for _ in paths]
    for name, model in zip(names, models):
        adversarial = _adversarial(model, images, labels)
        for kind, pixels in (("clean", images), ("adv", adversarial)):
            maps = inspection.stage_attention(model, pixels)
            predictions = np.argmax(model(pixels, training=False), -1)
            for stage in stages:
                arrays[f"{name}/{kind}/{stage}"] = maps[stage]
            arrays[f"{name}/{kind}/predicted"] = np.asarray([class_names[p] for p in predictions])
            for index in range(len(paths)):
                title = f"{name} {kind}\npred: {class_names[predictions[index]]}"
                rows_per_image[index].append(
                    (title, pixels[index], {s: maps[s][index] for s in stages})
                )
    arrays["labels"] = np.asarray([class_names[label] for label in labels])
    np.savez_compressed(_output("attention.npz"), **arrays)
    written = ["attention.npz"]
    attack = f"PGD-{_STEPS.value} at eps {units.fraction(_EPS.value)}"
    try:
        for path, image, label, rows in zip(paths, images, labels, rows_per_image):
            stem = os.path.splitext(os.path.basename(path))[0]
            truth = f"true: {class_names[label]}" if given else f"no --labels: attacked away from {class_names[label]}"
            title = f"{os.path.basename(path)}, {truth}; adversarial: {attack}"
            plots.attention_grid(_output(f"attention_{stem}.png"), image, rows, stages, title=title)
            written.append(f"attention_{stem}.png")
    except ImportError as error:
        print(f"No PNG written: {error}", file=sys.stderr)
    return written


def _parts(models, names, paths, images, labels, stages, class_names, given):
    import numpy as np

    from atalp_tf import inspection

    if not _MASK_DIR.value:
        raise app.UsageError("parts needs --mask_dir")
    from atalp_tf.inspection import find_mask
    from atalp_tf.inspection import load_mask

    masks = np.stack([load_mask(find_mask(p, _MASK_DIR.value), images.shape[1]) for p in paths])
    results = {}
    for name, model in zip(names, models):
        adversarial = _adversarial(model, images, labels)
        clean = inspection.part_activation(model, images, masks)
        adv = inspection.part_activation(model, adversarial, masks)
        results[name] = {
            stage: {"clean": float(clean[stage].mean()), "adv": float(adv[stage].mean())}
            for stage in stages
        }
    report = {
        "images": len(paths),
        "mask_area": float(masks.mean()),
        "attack": {"eps": _EPS.value, "eps_255": _EPS.value * 255, "steps": _STEPS.value},
        "part_activation": results,
    }
    with open(_output("parts.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(_output("parts.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "stage", "clean", "adv"])
        for name, per_stage in results.items():
            for stage, values in per_stage.items():
                writer.writerow([name, stage, f"{values['clean']:.4f}", f"{values['adv']:.4f}"])
    from atalp_tf import pixels

    print(f"Share of attention inside the part masks ({len(paths)} images, masks cover "
          f"{masks.mean():.1%} of the image; PGD-{_STEPS.value} eps={pixels.both(_EPS.value)}):")
    print(f"  {'model':<20} {'stage':<6} {'clean':>7} {'adv':>7}")
    for name, per_stage in results.items():
        for stage, values in per_stage.items():
            print(f"  {name:<20} {stage:<6} {values['clean']:>7.3f} {values['adv']:>7.3f}")
    return ["parts.json", "parts.csv"]


def _landscape(models, names, paths, images, labels, stages, class_names, given):
    from atalp_tf import inspection
    from atalp_tf import plots

    written = []
    for path, image, label in zip(paths, images, labels):
        stem = os.path.splitext(os.path.basename(path))[0]
        surfaces = []
        for name, model in zip(names, models):
            offsets, losses = inspection.loss_landscape(
                model, image, label, radius=_RADIUS.value, steps=_GRID.value, seed=_SEED.value
            )
            csv_name = f"landscape_{name}_{stem}.csv"
            with open(_output(csv_name), "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["gradient_sign_offset", "rademacher_offset", "loss"])
                for i, a in enumerate(offsets):
                    for j, b in enumerate(offsets):
                        writer.writerow([f"{a:.6f}", f"{b:.6f}", f"{losses[i, j]:.6f}"])
            written.append(csv_name)
            surfaces.append((name, losses))
        try:
            plots.landscape_surface(_output(f"landscape_{stem}.png"), offsets, surfaces)
            written.append(f"landscape_{stem}.png")
        except ImportError as error:
            print(f"No PNG written: {error}", file=sys.stderr)
    del stages  # the landscape is of the output, not of a stage
    return written


def _visualize(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"Give one command: {', '.join(COMMANDS)}. Received: {argv[1:]}")
    if _NAMES.value and len(_NAMES.value) != len(_MODELS.value):
        raise app.UsageError(f"--names has {len(_NAMES.value)} names for {len(_MODELS.value)} models")
    paths = _image_paths()
    import numpy as np

    from atalp_tf import runs
    from atalp_tf.backbones import STAGES
    from atalp_tf.export import load_classifier
    from atalp_tf.inspection import load_image

    located = [runs.locate(p) for p in _MODELS.value]
    models = [load_classifier(place.model_file) for place in located]
    names = _NAMES.value or [_default_name(place.model_file) for place in located]
    if len(set(names)) != len(names):
        raise app.UsageError(f"Models need distinct names; got {names}: pass --names")
    shape = tuple(models[0].backbone.input_shape[1:])
    for path, model in zip(_MODELS.value, models[1:]):
        if tuple(model.backbone.input_shape[1:]) != shape:
            raise app.UsageError(f"{path} takes another image shape than {_MODELS.value[0]} ({shape})")
    classes = int(models[0].backbone.output["logits"].shape[-1])
    class_names = runs.class_names(located[0].run_dir) or [str(i) for i in range(classes)]
    images = np.stack([load_image(p, shape) for p in paths])
    if _LABELS.value:
        labels = np.asarray(_labels(class_names), np.int32)
    else:  # without true labels, attack (and measure the loss of) the first model's prediction
        labels = np.argmax(models[0](images, training=False), -1).astype(np.int32)
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    command = {"attention": _attention, "parts": _parts, "landscape": _landscape}[argv[1]]
    written = command(models, names, paths, images, labels, STAGES, class_names, bool(_LABELS.value))
    print("Wrote " + ", ".join(os.path.join(_OUT_DIR.value, w) for w in written))


if __name__ == "__main__":
    app.run(cli.command("atalp_tf.visualize", _visualize))
