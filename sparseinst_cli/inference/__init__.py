"""Inference: the Predictor, its fast path (folded batch norm, NHWC, Winograd), the onnxruntime
runner, loops over many images, and drawing instances."""
