r"""Train a robust classifier: ``python -m atalp_tf.train --flagfile=flags/NAME.cfg``.

Every flag is validated before TensorFlow is imported, so a mistake fails at once with a
message that names the flag. Pixel quantities (``--eps``, ``--step_size``) are in the [0, 1]
pixel range and take fractions: ``--eps=8/255``.
"""

import os
import warnings

from absl import app
from absl import flags

from atalp_tf import choices
from atalp_tf import cli
from atalp_tf.errors import Advice
from atalp_tf.runs.rundir import RunDir
from atalp_tf.training import options

# The flags are the configuration's settings; what follows are the checks that span several.
_GROUPS = cli.define_options(options.GROUPS)


@flags.multi_flags_validator(
    ["weights", "architecture"],
    "--weights needs --architecture=resnet50, resnet101 or resnet152; resnet18 trains from scratch, "
    "and a keras-hub preset brings its own weights",
)
def _check_pretrained(values):
    architecture = values["architecture"]
    return values["weights"] == "none" or (architecture != "resnet18" and not choices.is_hub_preset(architecture))


@flags.multi_flags_validator(
    ["dataset", "data_dir"], "--dataset=flowers17 and --dataset=folder need an existing --data_dir"
)
def _check_data_dir(values):
    if values["dataset"] not in choices.FILE_DATASETS:
        return True
    return bool(values["data_dir"]) and os.path.isdir(values["data_dir"])


@flags.multi_flags_validator(
    ["dataset", "image_size"], "--dataset=flowers17, folder and tfds:NAME need --image_size"
)
def _check_image_size(values):
    return values["dataset"] in choices.ARRAY_DATASETS or values["image_size"] > 0


@flags.multi_flags_validator(
    ["architecture", "image_size", "dataset"], "--image_size is too small for --architecture"
)
def _check_size_for_architecture(values):
    size = values["image_size"] or choices.NATIVE_IMAGE_SIZE.get(values["dataset"])
    least = choices.min_image_size(values["architecture"])
    if size and size < least:
        given = (
            f"--image_size={size}" if values["image_size"]
            else f"--dataset={values['dataset']} is {size}x{size} unless --image_size says otherwise"
        )
        raise flags.ValidationError(
            f"--architecture={values['architecture']} takes images of at least {least}x{least}, and "
            f"{given}: pass --image_size={least} or more, or --architecture=resnet18"
        )
    return True


@flags.multi_flags_validator(
    ["strategy", "tpu"], "--strategy=tpu needs --tpu, the TPU's name or address"
)
def _check_tpu(values):
    return values["strategy"] != "tpu" or bool(values["tpu"])


@flags.multi_flags_validator(
    ["schedule", "lr_boundaries"], "--schedule=step needs --lr_boundaries, e.g. 100,150"
)
def _check_step_schedule(values):
    return values["schedule"] != "step" or bool(values["lr_boundaries"])


@flags.multi_flags_validator(
    ["clean_ce_weight", "method"], f"--clean_ce_weight applies to --method={', '.join(choices.CLEAN_CE_METHODS)}"
)
def _check_clean_ce(values):
    return not values["clean_ce_weight"] or values["method"] in choices.CLEAN_CE_METHODS


@flags.multi_flags_validator(
    ["bn_batches", "method"], f"--bn_batches=separate applies to --method={', '.join(choices.PAIRED_METHODS)}"
)
def _check_bn_batches(values):
    return values["bn_batches"] != "separate" or values["method"] in choices.PAIRED_METHODS


@flags.multi_flags_validator(
    ["attack", "method"], "--attack=fgsm_rs, free or n_fgsm needs an adversarial --method (not standard)"
)
def _check_attack_method(values):
    return values["attack"] == "pgd" or choices.OBJECTIVES[values["method"]].adversarial


@flags.multi_flags_validator(
    ["model_dir", "overwrite"],
    f"--model_dir already holds a finished run ({RunDir.RESULTS} is there): choose another "
    "directory, or pass --overwrite to replace it",
)
def _check_no_clobber(values):
    # A run in progress with the same configuration resumes; the trainer checks that.
    return values["overwrite"] or not values["model_dir"] or not RunDir(values["model_dir"]).finished()


def _config_from_flags():
    from atalp_tf.attacks import training_attack
    from atalp_tf.training.config import TrainConfig

    config = TrainConfig.from_settings(options.settings({name: flags.FLAGS[name].value for name in options.FLAG_NAMES}))
    adversary = config.adversary
    for message in adversary.training_attack.advice() + training_attack.advice("eval", adversary.eval_attack):
        warnings.warn(Advice(message), stacklevel=2)
    return config


def _train(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _config_from_flags()
    from atalp_tf import atomic
    from atalp_tf.training import trainer

    atomic.stop_point("imports")
    print(cli.as_flags("\n".join(trainer.summary(trainer.run(config, log=cli.log)))))


if __name__ == "__main__":
    app.run(cli.command("atalp_tf.train", _train, __doc__, _GROUPS))
