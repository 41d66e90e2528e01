"""The servers people would run instead of ours, for ``bench/peers.py``: each serves the same ``model.onnx`` (decode +
NMS in the graph) with ONNX Runtime fp32 and does the same per-image work (JPEG decode, letterbox, boxes back to the
original pixels, JSON)."""
