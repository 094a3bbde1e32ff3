"""Training and attack throughput against a plain Keras step and against two peer libraries.

    pip install -e ".[bench]"
    python benchmarks/training_throughput.py --output=runs/benchmarks/training_throughput.json

For each model (a width-16 CIFAR-style ResNet-18 at 32x32 and a ResNet-50 at 64x64, batch 64,
random pixels: throughput does not depend on the data) it prints, all in this one process:

* images/s of a plain Keras training step (``compile`` + ``train_on_batch``): the reference;
* images/s of ``RobustClassifier``'s step for every method with 7-step PGD, of AT + ALP
  with FGSM-RS and with free training, and of PAT with FGSM-RS (one step of free training replays the batch
  ``--free_replays`` times, so it is that many optimizer steps);
* images/s of the Adversarial Robustness Toolbox's ``AdversarialTrainerMadryPGD`` with its
  ``TensorFlowV2Classifier``, 7 steps, on the same model, batch and optimizer;
* images/s of L-inf PGD-7 alone: ours (``compile_attack``), foolbox's ``LinfPGD`` and the
  toolbox's ``ProjectedGradientDescent``, on the same model in inference mode;
* peak allocator memory of one step of each (``tf.config.experimental.get_memory_info``,
  reset before the step; it counts TensorFlow's tensors, weights included).

Every figure is the median of ``--runs`` timed runs of ``--steps_per_run`` steps after
``--warmup`` untimed ones (tracing, thread pools); each model has its own defaults. Ratios: each step's time against
``k + 2`` plain steps (k attack steps; one forward-backward each, plus the clean and
adversarial halves of the training pass), ours against the toolbox, attack against attack, and
peak memory against the plain step's. The JSON file holds the figures and the machine.
"""

import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TQDM_DISABLE", "1")  # the toolbox's progress bars

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

# runs x steps_per_run timed steps after warmup. ResNet-50 steps take seconds on 2 cores (the
# toolbox's about ten, and they vary by tens of percent from step to step): one step a run.
MODELS = {
    "resnet18_w16_32px": dict(architecture="resnet18", width=16, image_size=32, runs=5, steps_per_run=2, warmup=2),
    "resnet50_64px": dict(architecture="resnet50", width=64, image_size=64, runs=5, steps_per_run=1, warmup=2),
}
METHODS = ("standard", "pat", "alp", "at", "at_alp", "trades")
PEERS = ("art", "foolbox")

_MODELS = flags.DEFINE_list("models", list(MODELS), f"Models to measure, of {', '.join(MODELS)}.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size of every measurement.", lower_bound=1)
_ATTACK_STEPS = flags.DEFINE_integer("attack_steps", 7, "PGD steps (k).", lower_bound=1)
_FREE_REPLAYS = flags.DEFINE_integer("free_replays", 4, "Replays of free training.", lower_bound=1)
_RUNS = flags.DEFINE_integer("runs", None, "Timed runs; the median is reported (default: per model).", lower_bound=1)
_STEPS_PER_RUN = flags.DEFINE_integer("steps_per_run", None, "Steps in one timed run (default: per model).",
                                      lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", None, "Untimed steps first (default: per model).", lower_bound=1)
_PEERS = flags.DEFINE_list("peers", list(PEERS), "Peer libraries to measure (empty: none).")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file to write the figures to.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")

EPS, STEP = 8 / 255, 2 / 255


def _repetitions(spec):
    return {
        "runs": _RUNS.value or spec["runs"],
        "steps_per_run": _STEPS_PER_RUN.value or spec["steps_per_run"],
        "warmup": _WARMUP.value or spec["warmup"],
    }


def _median_rate(step, images_per_step, repetitions):
    """Median images/s of ``step()`` over the timed runs, after the warm-up."""
    for _ in range(repetitions["warmup"]):
        step()
    rates = []
    for _ in range(repetitions["runs"]):
        start = time.perf_counter()
        for _ in range(repetitions["steps_per_run"]):
            step()
        rates.append(images_per_step * repetitions["steps_per_run"] / (time.perf_counter() - start))
    return statistics.median(rates)


def _peak_bytes(step):
    import tensorflow as tf

    step()  # the first call of a step allocates for tracing as well
    tf.config.experimental.reset_memory_stats("CPU:0")
    step()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"]


def _data(image_size, batch):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((batch, image_size, image_size, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype("int32")
    return x, y


def _backbone(spec):
    from atalp_tf.models import backbones

    size = spec["image_size"]
    return backbones.build(spec["architecture"], 10, (size, size, 3), width=spec["width"])


def _optimizer():
    import keras

    return keras.optimizers.SGD(0.01, momentum=0.9)


def _plain_model(spec):
    import keras

    backbone = _backbone(spec)
    model = keras.Model(backbone.input, backbone.output["logits"])
    model.compile(optimizer=_optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _robust_model(spec, method, attack="pgd", step_size=STEP, steps=None):
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.models.classifier import RobustClassifier

    config = PGDConfig(EPS, step_size, steps or _ATTACK_STEPS.value)
    model = RobustClassifier(
        _backbone(spec), method=method, attack="pgd" if method == "standard" else attack,
        train_attack=None if method == "standard" else config,
        free_replays=_FREE_REPLAYS.value, seed=0,
    )
    model.compile(optimizer=_optimizer())
    return model


def _measure(step, batch, repetitions):
    return {"images_per_s": _median_rate(step, batch, repetitions), "peak_bytes": _peak_bytes(step)}


def _art_classifier(model, spec):
    from art.estimators.classification import TensorFlowV2Classifier
    import keras

    size = spec["image_size"]
    return TensorFlowV2Classifier(
        model, nb_classes=10, input_shape=(size, size, 3),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=_optimizer(), clip_values=(0.0, 1.0),
    )


def _art_trainer_step(spec, x, y):
    from art.defences.trainer import AdversarialTrainerMadryPGD

    trainer = AdversarialTrainerMadryPGD(
        _art_classifier(_plain_model(spec), spec), nb_epochs=1, batch_size=len(x),
        eps=EPS, eps_step=STEP, max_iter=_ATTACK_STEPS.value, num_random_init=1,
    )
    return lambda: trainer.fit(x, y)


def _attack_steps(spec, x, y, peers):
    """``{name: step}`` of PGD-k alone on one standard model, ours and the peers'."""
    import tensorflow as tf

    from atalp_tf.attacks import PGDConfig
    from atalp_tf.attacks import compile_attack

    model = _plain_model(spec)
    ours = compile_attack(lambda z: model(z, training=False), PGDConfig(EPS, STEP, _ATTACK_STEPS.value), seed=0)
    x_t, y_t = tf.constant(x), tf.constant(y)
    steps = {"ours": lambda: ours(x_t, y_t).numpy()}
    if "foolbox" in peers:
        import foolbox

        fmodel = foolbox.TensorFlowModel(model, bounds=(0, 1))
        pgd = foolbox.attacks.LinfPGD(abs_stepsize=STEP, steps=_ATTACK_STEPS.value, random_start=True)
        # int64 labels, as the model's argmax: eagerpy 0.30 breaks on NumPy 2 when they differ.
        y_64 = tf.constant(y.astype("int64"))
        steps["foolbox"] = lambda: pgd(fmodel, x_t, y_64, epsilons=EPS)[1].numpy()
    if "art" in peers:
        from art.attacks.evasion import ProjectedGradientDescent

        art_pgd = ProjectedGradientDescent(
            _art_classifier(model, spec), eps=EPS, eps_step=STEP, max_iter=_ATTACK_STEPS.value,
            num_random_init=1, batch_size=len(x), verbose=False,
        )
        steps["art"] = lambda: art_pgd.generate(x, y=y)
    return steps


def _benchmark(name, spec, peers, log):
    x, y = _data(spec["image_size"], _BATCH_SIZE.value)
    batch, k = len(x), _ATTACK_STEPS.value
    steps = {}
    plain = _plain_model(spec)
    steps["plain"] = (lambda: plain.train_on_batch(x, y), 0)
    for method in METHODS:
        model = _robust_model(spec, method)
        steps[method] = ((lambda m: lambda: m.train_on_batch(x, y))(model), 0 if method == "standard" else k)
    fgsm = _robust_model(spec, "at_alp", attack="fgsm_rs", step_size=1.25 * EPS, steps=1)
    steps["at_alp_fgsm_rs"] = (lambda: fgsm.train_on_batch(x, y), 1)
    # PAT trains on the adversarial half alone: how fast FGSM-RS is without the clean half.
    pat_fgsm = _robust_model(spec, "pat", attack="fgsm_rs", step_size=1.25 * EPS, steps=1)
    steps["pat_fgsm_rs"] = (lambda: pat_fgsm.train_on_batch(x, y), 1)
    free = _robust_model(spec, "at_alp", attack="free", step_size=EPS, steps=1)
    steps["at_alp_free"] = (lambda: free.train_on_batch(x, y), None)
    if "art" in peers:
        steps["art_madry_pgd"] = (_art_trainer_step(spec, x, y), k)

    repetitions = _repetitions(spec)
    results = {"train": {}, "attack": {}, "repetitions": repetitions}
    for label, (step, attack_steps) in steps.items():
        results["train"][label] = dict(_measure(step, batch, repetitions), attack_steps=attack_steps)
        log(f"  {name} {label}: {results['train'][label]['images_per_s']:.1f} images/s")
    for label, step in _attack_steps(spec, x, y, peers).items():
        results["attack"][label] = {"images_per_s": _median_rate(step, batch, repetitions)}
        log(f"  {name} PGD-{k} {label}: {results['attack'][label]['images_per_s']:.1f} images/s")
    results["ratios"] = _ratios(results, k)
    return results


def _ratios(results, k):
    train, attack = results["train"], results["attack"]
    plain = train["plain"]
    ratios = {"time_vs_k_plus_2_plain_steps": {}, "peak_memory_vs_plain": {}}
    for label, figures in train.items():
        if label == "plain":
            continue
        # The time of one step against k + 2 plain steps (free: its replays are plain-step-like).
        equivalent = _FREE_REPLAYS.value if figures["attack_steps"] is None else figures["attack_steps"] + 2
        if label == "standard":
            equivalent = 1
        ratios["time_vs_k_plus_2_plain_steps"][label] = plain["images_per_s"] / figures["images_per_s"] / equivalent
        ratios["peak_memory_vs_plain"][label] = figures["peak_bytes"] / plain["peak_bytes"]
    if "art_madry_pgd" in train:
        art = train["art_madry_pgd"]["images_per_s"]
        ratios["pat_vs_art_madry_pgd"] = train["pat"]["images_per_s"] / art
        ratios["at_alp_vs_art_madry_pgd"] = train["at_alp"]["images_per_s"] / art
    ratios["at_alp_fgsm_rs_vs_at_alp_pgd"] = train["at_alp_fgsm_rs"]["images_per_s"] / train["at_alp"]["images_per_s"]
    ratios["pat_fgsm_rs_vs_pat_pgd"] = train["pat_fgsm_rs"]["images_per_s"] / train["pat"]["images_per_s"]
    for peer in PEERS:
        if peer in attack:
            ratios[f"attack_ours_vs_{peer}"] = attack["ours"]["images_per_s"] / attack[peer]["images_per_s"]
    # What bounds at_alp: its k attack steps (timed alone, on the same architecture) and the
    # rest, the training pass over the clean and adversarial halves, each in plain steps.
    plain_s = 1 / plain["images_per_s"]
    attack_s = 1 / attack["ours"]["images_per_s"]
    at_alp_s = 1 / train["at_alp"]["images_per_s"]
    ratios["at_alp_breakdown_in_plain_steps"] = {
        "attack_step": attack_s / k / plain_s,
        "attack_total": attack_s / plain_s,
        "training_pass": (at_alp_s - attack_s) / plain_s,
        "whole_step": at_alp_s / plain_s,
    }
    return ratios


TARGETS = (
    ("pat_vs_art_madry_pgd", ">=", 5.0, "pat step vs the toolbox's Madry PGD trainer"),
    ("at_alp_vs_art_madry_pgd", ">=", 4.0, "at_alp step vs the toolbox's Madry PGD trainer"),
    ("time_vs_k_plus_2_plain_steps/at_alp", "<", 0.7, "at_alp time vs k + 2 plain steps"),
    ("peak_memory_vs_plain/at_alp", "<", 3.0, "at_alp peak memory vs the plain step"),
    ("at_alp_fgsm_rs_vs_at_alp_pgd", ">=", 3.0, "FGSM-RS at_alp vs PGD-7 at_alp throughput"),
)
# Printed beside the targets, not one of them.
CONTEXT = (("pat_fgsm_rs_vs_pat_pgd", "FGSM-RS pat vs PGD-7 pat throughput"),)


def _lookup(ratios, key):
    value = ratios
    for part in key.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _print_table(name, results):
    train, attack, ratios = results["train"], results["attack"], results["ratios"]
    print(f"\n{name}")
    print(f"  {'train step':<16} {'images/s':>9} {'vs k+2 plain':>13} {'peak MiB':>9} {'vs plain':>9}")
    for label, figures in train.items():
        relative = ratios["time_vs_k_plus_2_plain_steps"].get(label)
        memory = ratios["peak_memory_vs_plain"].get(label)
        print(
            f"  {label:<16} {figures['images_per_s']:>9.1f} "
            f"{'' if relative is None else f'{relative:.2f}':>13} "
            f"{figures['peak_bytes'] / 2**20:>9.0f} {'' if memory is None else f'{memory:.2f}':>9}"
        )
    print(f"  {'PGD-k attack':<16} {'images/s':>9}")
    for label, figures in attack.items():
        print(f"  {label:<16} {figures['images_per_s']:>9.1f}")
    print("  targets:")
    for key, sense, bound, text in TARGETS:
        value = _lookup(ratios, key)
        if value is None:
            print(f"    {text}: not measured")
            continue
        met = value >= bound if sense == ">=" else value < bound
        print(f"    {text}: {value:.2f} (target {sense} {bound}) {'met' if met else 'MISSED'}")
    for key, text in CONTEXT:
        print(f"    {text}: {ratios[key]:.2f}")
    for peer in PEERS:
        if f"attack_ours_vs_{peer}" in ratios:
            print(f"    PGD attack, ours vs {peer}: {ratios[f'attack_ours_vs_{peer}']:.2f}x")
    parts = ratios["at_alp_breakdown_in_plain_steps"]
    print(
        f"  at_alp in plain steps: {parts['whole_step']:.2f} = attack {parts['attack_total']:.2f} "
        f"({parts['attack_step']:.2f} per PGD step) + training pass {parts['training_pass']:.2f}"
    )


def _machine():
    import keras
    import tensorflow as tf

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__}
    for module in ("art", "foolbox"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU")),
        "platform": platform.platform(), "versions": versions,
    }


def main(argv):
    del argv
    unknown = sorted(set(_MODELS.value) - set(MODELS))
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; expected some of {', '.join(MODELS)}")
    peers = [p for p in _PEERS.value if p]
    if set(peers) - set(PEERS):
        raise app.UsageError(f"--peers: expected some of {', '.join(PEERS)}; got {','.join(peers)}")
    if _OUTPUT.value and os.path.exists(_OUTPUT.value) and not _OVERWRITE.value:
        raise app.UsageError(f"--output {_OUTPUT.value} exists; pass --overwrite to replace it")
    for peer in peers:
        try:
            __import__(peer)
        except ImportError:
            raise app.UsageError(f"--peers={peer} needs the benchmark extra: pip install -e '.[bench]'") from None

    import logging

    import keras

    logging.getLogger("art").setLevel(logging.WARNING)  # a success-rate line per attack call
    keras.utils.set_random_seed(0)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    report = {
        "machine": _machine(),
        "settings": {
            "batch_size": _BATCH_SIZE.value, "attack_steps": _ATTACK_STEPS.value, "eps": EPS,
            "step_size": STEP, "free_replays": _FREE_REPLAYS.value, "peers": peers,
        },
        "models": {},
    }
    for name in _MODELS.value:
        report["models"][name] = dict(MODELS[name], **_benchmark(name, MODELS[name], peers, log))
        _print_table(name, report["models"][name])
    if _OUTPUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
        with open(_OUTPUT.value, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nWrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
