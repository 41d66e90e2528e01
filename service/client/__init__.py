"""Python clients for the yoloxpai server: REST (:class:`RestClient`), gRPC (:class:`GrpcClient`, including frame
streaming), video/camera streaming (:func:`stream_video`) and drawing (:func:`draw_detections`).

Command line: ``python -m service.client IMAGE_OR_VIDEO [--grpc HOST:PORT | --rest URL] [--out FILE]``.
Imports nothing from ``model`` and nothing of the server.
"""

from service.client.draw import draw_detections
from service.client.grpc_client import GrpcClient
from service.client.rest_client import DetectError, RestClient
from service.client.results import Detection, ImageDetections
from service.client.video import stream_video

__all__ = [
    "DetectError",
    "Detection",
    "GrpcClient",
    "ImageDetections",
    "RestClient",
    "draw_detections",
    "stream_video",
]
