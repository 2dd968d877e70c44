"""Deploying a trained obfuscator on devices: ONNX/int8 export, streaming, benchmarks."""
