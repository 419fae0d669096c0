"""The models that experiments, benchmarks and tests train, quantize and time; one module per family.

- ``digits_cnn``: ``DigitsCNN``, a small CNN for scikit-learn's 8x8 digits;
- ``resnet``: ``ResNet20``, CIFAR-shaped ResNet-20.
"""
