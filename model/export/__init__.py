"""Export: checkpoint -> reparameterised end-to-end graph (decode + NMS) -> bundle (preprocess, model, meta).

Only the export path imports torch.onnx / openvino / tensorrt, and only inside functions.
"""
