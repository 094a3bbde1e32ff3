"""A user's Keras classifier as the network the training objectives read: its logits and,
for attention pairing, the feature maps of its stages.

Attention pairing compares the attention maps of a few layers' outputs ("stages"; for a
ResNet conv2_x..conv5_x). ``find`` names them for the ResNets whose layout is known:
keras.applications ResNets (the last ``convK_blockN_out`` of each K) and keras-hub ResNet
backbones (their ``pyramid_outputs`` P2..P5, which are the same four stages), and for any other
model ``resolve`` takes the layer names a user gives. ``network`` then calls the classifier's
own layers again on a new input, nested models included, so that one pass returns
``{"logits": ..., stage: feature map, ...}`` with weights shared with the user's model.
"""

import re

import keras

from atalp_tf.models.backbones import STAGES
from atalp_tf.models.backbones import hub_stages
from atalp_tf.models.backbones import walk_layers

LOGITS = "logits"
_KERAS_STAGE = re.compile(r"^conv([2-5])_block(\d+)_out$")


def find(model):
    """``{stage: layer name}`` of a known ResNet inside ``model``, or ``{}``."""
    for layer in [model, *walk_layers(model)]:
        pyramid = getattr(layer, "pyramid_outputs", None)
        if isinstance(pyramid, dict) and all(f"P{k}" in pyramid for k in range(2, 6)):
            return {stage: output._keras_history.operation.name for stage, output in hub_stages(layer).items()}
    last = {}
    for layer in walk_layers(model):
        match = _KERAS_STAGE.match(layer.name)
        if match:
            stage, block = f"conv{match.group(1)}", int(match.group(2))
            if block >= last.get(stage, (0, ""))[0]:
                last[stage] = (block, layer.name)
    return {stage: last[stage][1] for stage in STAGES} if len(last) == len(STAGES) else {}


def candidates(model):
    """Names of the last layer at each spatial resolution, in order: a user's likely stages."""
    chosen = {}
    for layer in walk_layers(model):
        if isinstance(layer, keras.Model):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # never called, or called more than once
            continue
        if len(shape) == 4 and shape[1] is not None:
            chosen[tuple(shape[1:3])] = layer.name
    return list(chosen.values())


def _layer_names(model):
    return {layer.name for layer in walk_layers(model)}


def resolve(model, stages, *, required):
    """``{key: layer name}`` of the stages of ``model``: ``stages`` (a list of layer names, or a
    dict from key to layer name), else the known ResNet's, else ``{}``. ``required``: the
    method pairs attention maps, so an empty answer is an error that lists candidates."""
    if stages is None:
        found = find(model)
        if required and not found:
            raise ValueError(
                f"Attention pairing needs the feature maps of the model's stages, and {model.name!r} is "
                "not a ResNet whose stages are known (keras.applications, keras-hub). Pass "
                "`stages=[layer names]`, one or more layers with 4-D outputs; the last layer of each "
                f"spatial resolution here is {candidates(model)}"
            )
        return found
    if isinstance(stages, str):
        stages = [stages]
    named = dict(stages) if isinstance(stages, dict) else {name: name for name in stages}
    if not named and required:
        raise ValueError("Attention pairing needs at least one layer in `stages`, or None to find them")
    if LOGITS in named:
        raise ValueError(f"`stages` cannot use the key {LOGITS!r}, which is the network's output")
    unknown = [name for name in named.values() if name not in _layer_names(model)]
    if unknown:
        raise ValueError(
            f"`stages` names {unknown}, which are not layers of {model.name!r}. The last layer of each "
            f"spatial resolution here is {candidates(model)}"
        )
    return named


def output_of(model):
    """``model``'s symbolic output (a Sequential model's too, which has no ``output`` until called)."""
    try:
        return model.output
    except AttributeError:
        return model.outputs[0] if model.outputs and len(model.outputs) == 1 else model.outputs


def softmax_layer(model):
    """The layer that makes ``model``'s output, if it applies a softmax; else None."""
    history = getattr(output_of(model), "_keras_history", None)
    layer = history.operation if history else None
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax) or getattr(activation, "__name__", "") == "softmax":
        return layer
    return None


def check_logits(model):
    """Raises ``ValueError`` when ``model`` ends in a softmax: the objectives need logits."""
    layer = softmax_layer(model)
    if layer is not None:
        raise ValueError(
            f"{model.name!r} ends in a softmax (layer {layer.name!r}), but training needs the logits before "
            "it: build the model with a linear last layer (for keras.applications, "
            "`classifier_activation=None`)"
        )


def network(model, stages):
    """A functional model of ``model``'s own layers returning ``{"logits": ..., key: the output of
    layer stages[key], ...}`` for input pixels in [0, 1]."""
    if not model.inputs or len(model.inputs) != 1:
        raise ValueError(
            f"{model.name!r} needs exactly one image input and must be built: create it on a keras.Input "
            "(or give a Sequential model an Input layer)"
        )
    wanted = {name: key for key, name in stages.items()}
    found = {}
    inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name="images")
    logits = _trace(model, inputs, wanted, found)
    if not hasattr(logits, "shape") or len(logits.shape) != 2:
        raise ValueError(
            f"{model.name!r} must return one tensor of logits (batch, classes); its output is {logits}"
        )
    if logits.dtype != "float32":
        # Under a mixed-precision policy the losses and softmax need float32 logits.
        logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(logits)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"The layers {missing} of {model.name!r} do not lie on the path from its input to its logits")
    outputs = {LOGITS: logits}
    outputs.update({key: found[name] for name, key in wanted.items()})
    return keras.Model(inputs, outputs, name=model.name)


def _trace(model, inputs, wanted, found):
    """Calls ``model``'s layers on ``inputs`` again, nested models layer by layer where they
    hold a wanted layer, recording in ``found`` the output of each layer named in ``wanted``."""

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.Model) and _layer_names(layer) & set(wanted):
            return _trace(layer, args[0], wanted, found)
        result = layer(*args, **kwargs)
        if layer.name in wanted:
            found[layer.name] = result
        return result

    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = call(layer, x)
        return x
    clone = keras.models.clone_model(
        model, input_tensors=inputs, clone_function=lambda layer: layer, call_function=call
    )
    return clone.output
