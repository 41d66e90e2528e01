"""Python clients for the yoloxpai server: REST (:class:`RestClient`), gRPC (:class:`GrpcClient`, including frame
streaming), video/camera streaming (:func:`stream_video`) and drawing (:func:`draw_detections`).

Command line: ``python -m yoloxpai.client IMAGE_OR_VIDEO [--grpc HOST:PORT | --rest URL] [--out FILE]``.
Needs only httpx, grpcio/protobuf, OpenCV and numpy: of the server it imports just the generated stubs in
``service.pb``, of ``model`` just ``model.drawing`` (shared with ``yoloxpai predict``);
``tests/service/test_client.py`` checks that no server dependency gets imported.
"""

from yoloxpai.client.draw import draw_detections
from yoloxpai.client.grpc_client import GrpcClient
from yoloxpai.client.rest_client import DetectError, RestClient
from yoloxpai.client.results import Detection, ImageDetections
from yoloxpai.client.video import stream_video

__all__ = [
    "DetectError",
    "Detection",
    "GrpcClient",
    "ImageDetections",
    "RestClient",
    "draw_detections",
    "stream_video",
]
