"""DSDG generator networks and their training code.

* ``generator``: the dual-encoder VAE (``LiveEncoder``, ``SpoofEncoder``, ``SpoofTypeClassifier``,
  ``Decoder`` and the ``DualVAE`` container), with the original class names as aliases.
* ``upsample``: the decoder's speed path, each nearest 2x upsampling folded into the next convolution.
* ``light_cnn``: LightCNN-29 v2, the frozen identity network, and ``load_lightcnn`` for the official file.
* ``losses``: the generator's loss terms, named for what they compute.
* ``engine``: one training epoch, prior sampling and image grids.
"""
