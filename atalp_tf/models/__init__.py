"""The classifiers: ResNet backbones as multi-output functional models, in-model preprocessing,
the training objectives, and ``RobustClassifier``, whose ``train_step`` makes its adversarial
examples and minimises its method's loss.

* ``backbones``: CIFAR-style ResNet-18, the keras.applications ResNets and keras-hub's presets,
  returning the logits and the four stages conv2..conv5 that attention pairing reads;
* ``stages``: any Keras classifier as such a network, its stages found or named;
* ``preprocessing``: normalisation as real Keras layers, so models take pixels in [0, 1];
* ``objectives``: one loss function per training method;
* ``classifier``: ``RobustClassifier``, for those networks and any Keras classifier.
"""
