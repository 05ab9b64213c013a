"""ONNX export and a JAX-free runtime for students."""
