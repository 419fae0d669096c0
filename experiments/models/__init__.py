"""The models that experiments, benchmarks and tests train, quantize and time; one module per family.

- ``digits_cnn``: ``DigitsCNN``, a small CNN for scikit-learn's 8x8 digits;
- ``resnet``: ``ResNet20``, CIFAR-shaped ResNet-20 (and ResNet-8 with ``blocks=1``);
- ``small``: the small models of the lowering and verification tests;
- ``registry``: ``build_model(name, input_shape, num_classes)`` for the experiments.
"""
