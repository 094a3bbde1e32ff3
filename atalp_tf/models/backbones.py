"""ResNet backbones as multi-output functional models.

Every backbone takes raw pixels in [0, 1] and returns a dict with the logits and the output
of the four ResNet stages, ``conv2``..``conv5`` (the paper's "group 0..3"), which the
attention-pairing loss and the attention-map pictures read: the CIFAR-style ``resnet18``,
keras.applications' ResNets (``keras_resnet``) and keras-hub's (``hub_resnet``, an optional
dependency).
"""

import os

import keras

from atalp_tf.choices import HUB_PREFIX
from atalp_tf.choices import is_hub_preset
from atalp_tf.errors import UserError
from atalp_tf.errors import WeightsError
from atalp_tf.models.preprocessing import CaffePreprocessing

STAGES = ("conv2", "conv3", "conv4", "conv5")

# Last block of each stage in keras.applications (conv2_x..conv5_x of He et al.).
_KERAS_RESNETS = {
    "resnet50": (keras.applications.ResNet50, (3, 4, 6, 3)),
    "resnet101": (keras.applications.ResNet101, (3, 4, 23, 3)),
    "resnet152": (keras.applications.ResNet152, (3, 8, 36, 3)),
}


def walk_layers(model):
    """Every layer inside ``model``, nested models' layers included, depth first."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from walk_layers(layer)


def _check_common(num_classes, input_shape):
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape}"
        )


def _head(features, num_classes):
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    # float32 logits keep softmax and the losses stable under a mixed-precision policy.
    return keras.layers.Dense(num_classes, dtype="float32", name="logits")(pooled)


def _basic_block(x, filters, stride, name, synchronized_bn):
    def bn(suffix):
        return keras.layers.BatchNormalization(
            epsilon=1e-5, momentum=0.9, synchronized=synchronized_bn, name=f"{name}_{suffix}"
        )

    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv"
        )(x)
        shortcut = bn("0_bn")(shortcut)
    y = keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_1_conv"
    )(x)
    y = keras.layers.ReLU(name=f"{name}_1_relu")(bn("1_bn")(y))
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = bn("2_bn")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet18(
    num_classes,
    input_shape=(32, 32, 3),
    width=64,
    mean=0.5,
    std=0.25,
    synchronized_bn=False,
    name="resnet18",
):
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, stage widths ``width * (1, 2, 4, 8)``.

    Args:
        num_classes: number of classes.
        input_shape: ``(height, width, channels)`` of the [0, 1] input.
        width: channels of the first stage; 64 is the usual ResNet-18, 8 or 16 run on a CPU.
        mean, std: per-channel (or scalar) statistics that the model's first layer removes.
        synchronized_bn: share batch statistics across replicas under ``tf.distribute``.
    """
    _check_common(num_classes, input_shape)
    if int(width) != width or width < 1:
        raise ValueError(f"`width` must be a positive integer. Received: width={width}")
    channels = input_shape[-1]
    mean = [float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean] * channels)]
    std = [float(s) for s in (std if isinstance(std, (list, tuple)) else [std] * channels)]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(
            f"`mean` and `std` need one value per channel ({channels}) and std > 0. "
            f"Received: mean={mean}, std={std}"
        )

    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Normalization(
        mean=mean, variance=[s * s for s in std], name="normalize"
    )(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1_conv")(x)
    x = keras.layers.BatchNormalization(
        epsilon=1e-5, momentum=0.9, synchronized=synchronized_bn, name="conv1_bn"
    )(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    outputs = {}
    for stage, (stage_name, stride) in enumerate(zip(STAGES, (1, 2, 2, 2))):
        filters = width * 2**stage
        for block in (1, 2):
            x = _basic_block(
                x, filters, stride if block == 1 else 1, f"{stage_name}_block{block}", synchronized_bn
            )
        outputs[stage_name] = x
    outputs["logits"] = _head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def keras_resnet(architecture, num_classes, input_shape=(224, 224, 3), weights="imagenet"):
    """A ``keras.applications`` ResNet-50/101/152 with a new head, for fine-tuning.

    Args:
        architecture: ``"resnet50"``, ``"resnet101"`` or ``"resnet152"``.
        num_classes: classes of the new head.
        input_shape: ``(height, width, channels)``, sides of 32 or more; one channel
            (grayscale) is repeated into three inside the model.
        weights: ``"imagenet"`` (downloaded by Keras on first use and cached in
            ``~/.keras/models``), ``None`` for random initialisation, or the path to a
            weights file of the headless network (``include_top=False``).

    Raises ``WeightsError`` when the ImageNet weights cannot be downloaded or the file does
    not fit the network, saying what to do.
    """
    _check_common(num_classes, input_shape)
    if architecture not in _KERAS_RESNETS:
        raise ValueError(
            f"`architecture` must be one of {tuple(_KERAS_RESNETS)}. "
            f"Received: architecture={architecture!r}"
        )
    if input_shape[-1] not in (1, 3):
        raise ValueError(f"{architecture} takes RGB or grayscale input. Received: input_shape={input_shape}")
    if weights not in ("imagenet", None) and not os.path.isfile(weights):
        raise ValueError(
            "`weights` must be 'imagenet', None or the path to an existing weights file. "
            f"Received: weights={weights!r}"
        )
    constructor, blocks = _KERAS_RESNETS[architecture]
    try:
        network = constructor(include_top=False, weights=weights, input_shape=(*input_shape[:2], 3))
    except Exception as error:  # noqa: BLE001 -- Keras raises a bare Exception for a failed download
        problem = _weights_problem(architecture, weights, error)
        if problem is None:
            raise
        raise WeightsError(problem) from None
    stage_outputs = {
        stage: network.get_layer(f"{stage}_block{count}_out").output
        for stage, count in zip(STAGES, blocks)
    }
    extractor = keras.Model(network.inputs, stage_outputs, name=architecture)

    inputs = keras.Input(shape=input_shape, name="images")
    features = extractor(CaffePreprocessing(name="caffe_preprocessing")(inputs))
    outputs = dict(features)
    outputs["logits"] = _head(features["conv5"], num_classes)
    return keras.Model(inputs, outputs, name=f"{architecture}_classifier")


def _weights_problem(architecture, weights, error):
    """What went wrong loading ``weights`` and what to do, or None for an error of ours."""
    message = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    headless = f"{architecture}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if weights == "imagenet":
        if "URL fetch failure" in message or isinstance(error, OSError):
            return (
                f"`weights=imagenet` downloads {headless} from storage.googleapis.com on first use, "
                f"and that failed ({message}). On a machine without network, fetch that file "
                "elsewhere and pass `weights=/path/to/it` (or copy it into ~/.keras/models/)"
            )
        return None
    if isinstance(error, (ValueError, OSError)):
        return (
            f"`weights={weights}` does not fit {architecture} ({message}); give the headless "
            f"ImageNet weights of this network ({headless}) or `weights=none`"
        )
    return None


# What keras-hub's ResNet presets normalise with (their image converters' mean and std, in [0, 1]
# pixels), for a preset directory saved without a converter.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hub_stages(network):
    """``{stage: output}`` of a keras-hub ResNet backbone: its ``pyramid_outputs`` P2..P5 are
    conv2_x..conv5_x."""
    return {stage: network.pyramid_outputs[f"P{k}"] for k, stage in zip(range(2, 6), STAGES)}


def hub_resnet(preset, num_classes, input_shape=(224, 224, 3)):
    """A keras-hub ResNet backbone (``keras_hub.models.ResNetBackbone``) with a new head.

    Args:
        preset: ``hub:NAME`` or NAME (a preset keras-hub knows, downloaded on first use), a
            ``kaggle://`` or ``hf://`` handle, or a local preset directory (``save_to_preset``).
        num_classes: classes of the new head.
        input_shape: ``(height, width, channels)`` of the [0, 1] input, sides of 32 or more;
            one channel (grayscale) is repeated into three inside the model.

    keras-hub's converters take 0-255 pixels to what the backbone was trained on (``x * scale
    + offset``); the model here takes [0, 1] pixels, so its first layer applies the preset's
    converter to ``255 * x``, and eps stays in [0, 1] units. A preset without a converter
    gets ImageNet's mean and std (those of keras-hub's ResNet presets).
    """
    _check_common(num_classes, input_shape)
    if input_shape[-1] not in (1, 3):
        raise ValueError(f"keras-hub ResNets take RGB or grayscale input. Received: input_shape={input_shape}")
    try:
        import keras_hub
    except ImportError:
        raise UserError(
            f"`architecture`={preset} is a keras-hub preset, and keras-hub is not installed: "
            "pip install -e '.[hub]' (or pip install keras-hub)"
        ) from None
    handle = preset.removeprefix(HUB_PREFIX)
    try:
        network = keras_hub.models.ResNetBackbone.from_preset(handle)
    except Exception as error:  # noqa: BLE001 -- keras-hub raises what its download or file layer does
        message = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"`architecture`={preset}: keras-hub could not load the ResNet preset {handle!r} ({message}). A "
            "named preset downloads from Kaggle on first use; on a machine without network, load it "
            "elsewhere, save it with backbone.save_to_preset(DIR) and pass that directory"
        ) from None
    scale, offset = _hub_normalisation(keras_hub, handle)
    features = keras.Model(
        network.inputs,
        {**hub_stages(network), "out": network.output},
        name=network.name,
    )
    inputs = keras.Input(shape=input_shape, name="images")
    rgb = inputs if input_shape[-1] == 3 else keras.layers.Concatenate(name="gray_to_rgb")([inputs] * 3)
    outputs = dict(features(keras.layers.Rescaling(scale, offset, name="hub_preprocessing")(rgb)))
    outputs["logits"] = _head(outputs.pop("out"), num_classes)
    return keras.Model(inputs, outputs, name=f"{network.name}_classifier")


def _hub_normalisation(keras_hub, handle):
    """``(scale, offset)`` per channel that map [0, 1] pixels as the preset's converter maps 0-255."""
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(handle)
        scale, offset = converter.scale, converter.offset
    except (ValueError, FileNotFoundError, OSError):  # a backbone saved without its converter
        scale = [1 / (255 * s) for s in IMAGENET_STD]
        offset = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    scale = [1.0] * 3 if scale is None else list(scale) if isinstance(scale, (list, tuple)) else [scale] * 3
    offset = [0.0] * 3 if offset is None else list(offset) if isinstance(offset, (list, tuple)) else [offset] * 3
    return [255.0 * float(s) for s in scale], [float(o) for o in offset]


def build(architecture, num_classes, input_shape, *, weights=None, width=64, synchronized_bn=False):
    """Backbone by name: ``resnet18`` (CIFAR-style, from scratch), a keras.applications one, or a
    keras-hub preset (``hub_resnet``)."""
    if is_hub_preset(architecture):
        if weights is not None:
            raise ValueError(
                f"A keras-hub preset brings its own weights; pass weights=None. Received: weights={weights!r}"
            )
        return hub_resnet(architecture, num_classes, input_shape)
    if architecture == "resnet18":
        if weights is not None:
            raise ValueError(
                "resnet18 has no pretrained weights; pass weights=None. "
                f"Received: weights={weights!r}"
            )
        return resnet18(num_classes, input_shape, width=width, synchronized_bn=synchronized_bn)
    return keras_resnet(architecture, num_classes, input_shape, weights=weights)
