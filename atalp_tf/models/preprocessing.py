"""Input normalisation as real Keras layers, so it lives inside the model.

Attacks then work on raw pixels in [0, 1] and ``eps`` keeps one meaning for every backbone;
real layers (not ``Lambda``) keep ``.keras`` files loadable in Keras' safe mode.
"""

import keras

# keras.applications ResNets were trained on caffe-style input: BGR, 0-255, ImageNet mean off.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="atalp_tf")
class CaffePreprocessing(keras.layers.Layer):
    """Maps RGB pixels in [0, 1] to what ``keras.applications`` ResNets expect.

    The same arithmetic as ``keras.applications.resnet.preprocess_input`` on 0-255 input,
    done as a layer so it is differentiable and saved with the model. Grayscale input (one
    channel) is repeated into three first, so ImageNet weights serve grayscale data too.
    """

    def call(self, inputs):
        if inputs.shape[-1] == 1:
            inputs = keras.ops.repeat(inputs, 3, axis=-1)
        bgr = keras.ops.flip(inputs * 255.0, axis=-1)
        return bgr - keras.ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)
