"""Turns a trained run into verified device artifacts (merge, quantize, ONNX/TFLite/TensorRT, bundle)."""
