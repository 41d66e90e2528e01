"""The ten-line wrapper: FastAPI + ONNX Runtime, one image per request, the work on FastAPI's thread pool (what a
sync endpoint does). ``python -m bench.peers.fastapi_ort --onnx model.onnx --port 8000``."""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from bench.peers.common import detections, input_hw, letterbox, session


def app_for(onnx_path: str) -> FastAPI:
    app, sess = FastAPI(), session(onnx_path)
    hw, name = input_hw(sess), sess.get_inputs()[0].name

    def infer(jpeg: bytes) -> dict:
        tensor, r = letterbox(jpeg, hw)
        return {"detections": detections(sess.run(None, {name: tensor[None]}), 0, r)}

    @app.post("/detect")
    async def detect(request: Request) -> dict:
        return await run_in_threadpool(infer, await request.body())

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app_for(args.onnx), host="127.0.0.1", port=args.port, log_level="warning")
