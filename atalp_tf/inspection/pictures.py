"""The files ``python -m atalp_tf.visualize`` writes: attention grids, part activation, landscapes.

A ``Session`` holds one or several trained models (compared on the same images), the images
as each model sees them, their labels and the PGD attack that makes the adversarial images
(against each model itself, away from the labels). Its commands write into ``out_dir`` and
return the names written; PNGs need matplotlib, and without it the CSV, JSON and NPZ files are
still written and the missing install is named. Existing files are never replaced unless
``overwrite``.
"""

import contextlib
import csv
import dataclasses
import json
import os
import warnings

import numpy as np

from atalp_tf import atomic
from atalp_tf import pixels
from atalp_tf import plots
from atalp_tf.attacks import training_attack
from atalp_tf.attacks.pgd import PGDConfig
from atalp_tf.attacks.pgd import compile_attack
from atalp_tf.datasets.images import IMAGE_EXTENSIONS
from atalp_tf.errors import Advice
from atalp_tf.errors import OutputExists
from atalp_tf.errors import UserError
from atalp_tf.inspection import maps
from atalp_tf.models.classifier import stages_of
from atalp_tf.runs.loading import load_classifier
from atalp_tf.runs.loading import model_shape
from atalp_tf.runs.rundir import RunDir
from atalp_tf.runs.rundir import locate
from atalp_tf.runs.rundir import writing_into


def image_paths(images=(), image_dir=None, max_images=8):
    """The image files named, then the first ``max_images`` of ``image_dir`` by name."""
    paths = list(images)
    if image_dir:
        names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
        paths += [os.path.join(image_dir, n) for n in names[:max_images]]
    if not paths:
        raise UserError("Give images with `images` or `image_dir`")
    return paths


def _default_name(path):
    """A run's ``<run>/model.keras`` (or ``checkpoints/best.keras``) is named after the run."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in ("model", "last", "best"):
        run = os.path.dirname(os.path.abspath(path))
        if os.path.basename(run) == RunDir.CHECKPOINTS:
            return f"{os.path.basename(os.path.dirname(run))}_{stem}"
        return os.path.basename(run)
    return stem


def _label_ids(labels, class_names):
    """``labels`` (ids or class names) as class ids, checked against the models' classes."""
    ids = []
    for value in (str(v).strip() for v in labels):
        if value.isdigit():
            ids.append(int(value))
        elif value in class_names:
            ids.append(class_names.index(value))
        else:
            raise UserError(
                f"`labels={value}`: not a class id or name of these models; their classes are "
                f"{', '.join(f'{i} {n}' for i, n in enumerate(class_names))}"
            )
    wrong = [i for i in ids if i >= len(class_names)]
    if wrong:
        raise UserError(
            f"`labels` has class id {wrong[0]}, but the models classify {len(class_names)} classes "
            f"(0 to {len(class_names) - 1})"
        )
    return ids


@dataclasses.dataclass
class Session:
    models: list
    names: list
    paths: list
    images: np.ndarray
    labels: np.ndarray
    class_names: list
    given: bool  # whether the labels are the user's (else the first model's predictions)
    attack: PGDConfig
    seed: int
    out_dir: str
    overwrite: bool = False

    @classmethod
    def open(cls, models, paths, *, labels=(), names=None, eps=8 / 255, step_size=None, steps=20, seed=0,
             out_dir, overwrite=False):
        """Loads the models (``.keras`` files or run directories) and the images as they see
        them; without ``labels``, attacks (and measures the loss of) the first model's prediction."""
        if names and len(names) != len(models):
            raise UserError(f"`names` has {len(names)} names for {len(models)} models")
        if labels and len(labels) != len(paths):
            raise UserError(f"`labels` has {len(labels)} labels for {len(paths)} images")
        located = [locate(path) for path in models]
        loaded = [load_classifier(place.model_file) for place in located]
        names = list(names or [_default_name(place.model_file) for place in located])
        if len(set(names)) != len(names):
            raise UserError(f"Models need distinct names; got {names}: pass `names`")
        classes, shape = model_shape(loaded[0])
        for path, model in zip(models[1:], loaded[1:]):
            if model_shape(model)[1] != shape:
                raise UserError(f"{path} takes another image shape than {models[0]} ({shape})")
        run = RunDir(located[0].run_dir) if located[0].run_dir else None
        class_names = (run and run.class_names()) or [str(i) for i in range(classes)]
        images = np.stack([maps.load_image(p, shape) for p in paths])
        if labels:
            ids = np.asarray(_label_ids(labels, class_names), np.int32)
        else:
            ids = np.argmax(loaded[0](images, training=False), -1).astype(np.int32)
        with writing_into(out_dir, "atalp_tf.visualize"):
            os.makedirs(out_dir, exist_ok=True)
        # The PGD a training run is tested with, so the pictures show the attack its figures saw.
        attack = training_attack.evaluation(eps, step_size=step_size, steps=steps)
        return cls(loaded, names, list(paths), images, ids, class_names, bool(labels), attack, seed, out_dir, overwrite)

    @contextlib.contextmanager
    def _output(self, name):
        """The temporary name to write ``name`` of ``out_dir`` under; put in place whole when the
        block ends, holding the lock of the run ``out_dir`` is in (if it is in one)."""
        path = os.path.join(self.out_dir, name)
        if os.path.exists(path) and not self.overwrite:
            raise OutputExists(f"{path} exists; pass `overwrite=True` to replace it")
        with writing_into(self.out_dir, "atalp_tf.visualize"), atomic.replacing(path) as temporary:
            yield temporary

    def _need_stages(self, command):
        """The stage keys every model shares, which ``command`` draws the attention maps of."""
        for name, model in zip(self.names, self.models):
            if not stages_of(model):
                raise UserError(
                    f"Model {name} has no stage outputs, and {command} draws the attention maps of its "
                    "stages: give a RobustClassifier of a ResNet, or of a model trained with `stages=[...]`, "
                    "or use the landscape command, which needs only the logits"
                )
        stages = stages_of(self.models[0])
        if any(stages_of(model) != stages for model in self.models):
            each = ", ".join(f"{name}: {list(stages_of(model))}" for name, model in zip(self.names, self.models))
            raise UserError(
                f"The models' stages differ ({each}), and {command} draws them side by side: give models "
                "with the same stages"
            )
        return stages

    def _adversarial(self, model):
        """A compiled PGD against ``model``: ``(images, labels) -> adversarial images``."""
        return compile_attack(lambda x: model(x, training=False), self.attack, seed=self.seed)

    def _describe_attack(self):
        return f"PGD-{self.attack.steps} at eps {pixels.fraction(self.attack.eps)}"

    def attention(self):
        """Per image, a PNG grid of the image, its adversarial version and each stage's map,
        one pair of rows per model; the maps, predictions and labels in ``attention.npz``."""
        stages = self._need_stages("attention")
        arrays, rows_per_image = {}, [[] for _ in self.paths]
        for name, model in zip(self.names, self.models):
            adversarial = self._adversarial(model)(self.images, self.labels).numpy()
            for kind, images in (("clean", self.images), ("adv", adversarial)):
                stage_maps = maps.stage_attention(model, images)
                predictions = np.argmax(model(images, training=False), -1)
                for stage in stages:
                    arrays[f"{name}/{kind}/{stage}"] = stage_maps[stage]
                arrays[f"{name}/{kind}/predicted"] = np.asarray([self.class_names[p] for p in predictions])
                for index in range(len(self.paths)):
                    title = f"{name} {kind}\npred: {self.class_names[predictions[index]]}"
                    rows_per_image[index].append((title, images[index], {s: stage_maps[s][index] for s in stages}))
        arrays["labels"] = np.asarray([self.class_names[label] for label in self.labels])
        with self._output("attention.npz") as temporary:
            np.savez_compressed(temporary, **arrays)
        written = ["attention.npz"]
        try:
            for path, image, label, rows in zip(self.paths, self.images, self.labels, rows_per_image):
                stem = os.path.splitext(os.path.basename(path))[0]
                name = self.class_names[label]
                truth = f"true: {name}" if self.given else f"no `labels`: attacked away from {name}"
                title = f"{os.path.basename(path)}, {truth}; adversarial: {self._describe_attack()}"
                with self._output(f"attention_{stem}.png") as temporary:
                    plots.attention_grid(temporary, image, rows, stages, title=title)
                written.append(f"attention_{stem}.png")
        except ImportError as error:
            warnings.warn(Advice(f"No PNG written: {error}"), stacklevel=2)
        return written

    def parts(self, mask_dir, log=print):
        """The share of each stage's attention inside the part masks (named like the images),
        clean and adversarial, averaged: a table, ``parts.json`` and ``parts.csv``."""
        if not mask_dir:
            raise UserError("parts needs `mask_dir`, a folder of masks named like the images")
        self._need_stages("parts")
        masks = np.stack([maps.load_mask(maps.find_mask(p, mask_dir), self.images.shape[1]) for p in self.paths])
        results = {
            name: maps.part_shares(model, self.images, masks, self.labels, self._adversarial(model))
            for name, model in zip(self.names, self.models)
        }
        attack = self.attack
        report = {
            "images": len(self.paths),
            "mask_area": float(masks.mean()),
            "attack": {"eps": attack.eps, "eps_255": attack.eps * 255, "steps": attack.steps},
            "part_activation": results,
        }
        with self._output("parts.json") as temporary, open(temporary, "w") as f:
            json.dump(report, f, indent=2)
        with self._output("parts.csv") as temporary, open(temporary, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["model", "stage", "clean", "adv"])
            for name, per_stage in results.items():
                for stage, values in per_stage.items():
                    writer.writerow([name, stage, f"{values['clean']:.4f}", f"{values['adv']:.4f}"])
        log(f"Share of attention inside the part masks ({len(self.paths)} images, masks cover "
            f"{masks.mean():.1%} of the image; PGD-{attack.steps} eps={pixels.both(attack.eps)}):")
        log(f"  {'model':<20} {'stage':<6} {'clean':>7} {'adv':>7}")
        for name, per_stage in results.items():
            for stage, values in per_stage.items():
                log(f"  {name:<20} {stage:<6} {values['clean']:>7.3f} {values['adv']:>7.3f}")
        return ["parts.json", "parts.csv"]

    def landscape(self, radius=16 / 255, grid=21):
        """The loss around each image along the sign of its input gradient and a Rademacher
        direction: ``landscape_<model>_<image>.csv`` and a PNG surface per image."""
        written = []
        for path, image, label in zip(self.paths, self.images, self.labels):
            stem = os.path.splitext(os.path.basename(path))[0]
            surfaces = []
            for name, model in zip(self.names, self.models):
                offsets, values = maps.loss_landscape(model, image, label, radius=radius, steps=grid, seed=self.seed)
                csv_name = f"landscape_{name}_{stem}.csv"
                with self._output(csv_name) as temporary, open(temporary, "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["gradient_sign_offset", "rademacher_offset", "loss"])
                    for i, a in enumerate(offsets):
                        for j, b in enumerate(offsets):
                            writer.writerow([f"{a:.6f}", f"{b:.6f}", f"{values[i, j]:.6f}"])
                written.append(csv_name)
                surfaces.append((name, values))
            try:
                with self._output(f"landscape_{stem}.png") as temporary:
                    plots.landscape_surface(temporary, offsets, surfaces)
                written.append(f"landscape_{stem}.png")
            except ImportError as error:
                warnings.warn(Advice(f"No PNG written: {error}"), stacklevel=2)
        return written
