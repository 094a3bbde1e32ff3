"""PNG figures of the inspection results. matplotlib is optional: ``require_matplotlib`` says
how to install it, and callers still write their CSV and JSON without it."""

import numpy as np

INSTALL_HINT = "pip install 'atalp_tf[plots]'  (or: pip install matplotlib)"


def require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display is needed or assumed
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(f"Plots need matplotlib: {INSTALL_HINT}") from error
    return plt


def _upsample(attention, size):
    """Nearest-block then linear upsampling of a small map to ``size`` for overlaying."""
    rows = np.linspace(0, attention.shape[0] - 1, size[0])
    cols = np.linspace(0, attention.shape[1] - 1, size[1])
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, attention.shape[0] - 1), np.minimum(c0 + 1, attention.shape[1] - 1)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = attention[r0][:, c0] * (1 - fc) + attention[r0][:, c1] * fc
    bottom = attention[r1][:, c0] * (1 - fc) + attention[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def _show(axis, image):
    axis.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
    axis.set_xticks([])
    axis.set_yticks([])


def attention_grid(path, image, rows, stages, title=None):
    """One row per (model, clean/adversarial): the input, then each stage's map over it, with a
    colour bar for the maps (each scaled to its own maximum) and ``title`` above.

    ``rows`` is a list of ``(title, pixels, {stage: map})``.
    """
    plt = require_matplotlib()
    figure, axes = plt.subplots(
        len(rows), len(stages) + 1, figsize=(2.2 * (len(stages) + 1) + 0.8, 2.2 * len(rows) + 0.5),
        squeeze=False,
    )
    size = image.shape[:2]
    shown = None
    for row, (name, pixels, maps) in zip(axes, rows):
        _show(row[0], pixels)
        row[0].set_ylabel(name, fontsize=8)
        for axis, stage in zip(row[1:], stages):
            _show(axis, pixels)
            overlay = _upsample(maps[stage], size)
            shown = axis.imshow(overlay / max(overlay.max(), 1e-12), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for axis, stage in zip(axes[0][1:], stages):
        axis.set_title(stage, fontsize=9)
    axes[0][0].set_title("input", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0, 0.9, 0.95 if title else 1))
    if shown is not None:
        bar = figure.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        bar.set_label("attention / its maximum", fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def landscape_surface(path, offsets, surfaces):
    """3-D loss surfaces side by side; ``surfaces`` is a list of ``(title, losses)``."""
    plt = require_matplotlib()
    figure = plt.figure(figsize=(4.5 * len(surfaces), 4))
    a, b = np.meshgrid(offsets, offsets, indexing="ij")
    for index, (title, losses) in enumerate(surfaces, start=1):
        axis = figure.add_subplot(1, len(surfaces), index, projection="3d")
        axis.plot_surface(a, b, losses, cmap="viridis")
        axis.set_xlabel("sign(gradient)")
        axis.set_ylabel("Rademacher")
        axis.set_zlabel("loss")
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def accuracy_curves(path, curves, clean_accuracy=None):
    """Accuracy against attack iterations, one line per (eps, box), as in the paper's Figure 3.

    ``curves`` maps a label to a list of ``(iterations, accuracy)``.
    """
    accuracy_panels(path, {"": curves}, clean_accuracy)


def accuracy_panels(path, panels, clean_accuracy=None):
    """``accuracy_curves`` side by side: ``panels`` maps a title to its curves."""
    plt = require_matplotlib()
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    palette = plt.get_cmap("tab10").colors
    colors = {}  # one colour per model (the label without its last word, the box)
    for axis, (title, curves) in zip(axes[0], panels.items()):
        for label, points in curves.items():
            steps, accuracy = zip(*sorted(points))
            color = colors.setdefault(label.rsplit(" ", 1)[0], palette[len(colors) % len(palette)])
            style = "--" if "black" in label else "-"
            axis.plot(steps, accuracy, marker="o", linestyle=style, color=color, label=label)
        if clean_accuracy is not None:
            axis.axhline(clean_accuracy, color="gray", linewidth=0.8, label="clean")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("attack iterations")
        axis.set_ylabel("accuracy")
        axis.set_ylim(0, 1)
        axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
