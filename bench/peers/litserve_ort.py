"""LitServe with dynamic batching around ONNX Runtime: ``{"image": base64 JPEG}`` in (LitServe's JSON requests, as
its image examples do), up to ``--max-batch-size`` images per ``session.run`` after ``--batch-timeout`` s.
``python -m bench.peers.litserve_ort --onnx model.onnx --port 8000``."""

from __future__ import annotations

import argparse
import base64

import litserve as ls
import numpy as np

from bench.peers.common import detections, input_hw, letterbox, session


class DetectAPI(ls.LitAPI):
    def __init__(self, onnx_path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.onnx_path = onnx_path

    def setup(self, device: str) -> None:
        self.sess = session(self.onnx_path)
        self.hw, self.name = input_hw(self.sess), self.sess.get_inputs()[0].name

    def decode_request(self, request: dict) -> tuple[np.ndarray, float]:
        return letterbox(base64.b64decode(request["image"]), self.hw)

    def batch(self, inputs: list) -> list:
        return inputs

    def predict(self, inputs: list) -> list[list[dict]]:
        outputs = self.sess.run(None, {self.name: np.stack([tensor for tensor, _ in inputs])})
        return [detections(outputs, i, r) for i, (_, r) in enumerate(inputs)]

    def unbatch(self, outputs: list) -> list:
        return outputs

    def encode_response(self, output: list[dict]) -> dict:
        return {"detections": output}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    args = parser.parse_args()
    api = DetectAPI(args.onnx, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(port=args.port, host="127.0.0.1", log_level="warning", generate_client_file=False)
