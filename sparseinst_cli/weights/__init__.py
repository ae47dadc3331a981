"""Weights from elsewhere: the authors' checkpoints and ImageNet backbones converted into native
files, and the model zoo that downloads, converts and caches the authors' published models."""
