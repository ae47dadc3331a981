"""Deployment: ONNX export, conversion of the authors' checkpoints, and opening a model on a
backend (PyTorch, its fast path, onnxruntime)."""
