"""Export stage: ONNX export, precision conversion, TensorRT engines (``lightbsr.export``)."""
