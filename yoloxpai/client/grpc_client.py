"""A small gRPC client for ``yoloxpai.v1.Detector``: unary detection, model listing and frame streaming."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc
import numpy as np

from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from yoloxpai.client.rest_client import ImageLike, to_jpeg_bytes
from yoloxpai.client.results import Detection, ImageDetections

MESSAGE_LIMIT_BYTES = 64 * 1024 * 1024


def to_image(image: ImageLike, raw: bool = False) -> pb.Image:
    """A protobuf ``Image``: encoded bytes, or raw BGR pixels when ``raw`` and ``image`` is an array."""
    if raw and isinstance(image, np.ndarray):
        h, w = image.shape[:2]
        pixels = np.ascontiguousarray(image).tobytes()
        return pb.Image(raw=pb.RawImage(width=w, height=h, channel_order=pb.CHANNEL_ORDER_BGR, pixels=pixels))
    return pb.Image(encoded=to_jpeg_bytes(image)[0])


def from_response(response: pb.DetectResponse) -> ImageDetections:
    """Protobuf response -> :class:`ImageDetections` (``error`` set for an in-band frame failure)."""
    error = None
    if response.HasField("status") and response.status.code != 0:
        error = f"{response.status.error}: {response.status.message}"
    t = response.timing
    return ImageDetections(
        model=response.model,
        model_version=response.model_version,
        width=response.width,
        height=response.height,
        detections=tuple(
            Detection((d.box.x1, d.box.y1, d.box.x2, d.box.y2), d.score, d.class_id, d.class_name)
            for d in response.detections
        ),
        timing_ms={
            "decode": t.decode_ms,
            "queue": t.queue_ms,
            "inference": t.inference_ms,
            "postprocess": t.postprocess_ms,
            "total": t.total_ms,
        },
        frame_id=response.frame_id,
        error=error,
    )


class GrpcClient:
    """``GrpcClient("localhost:8001").detect("image.jpg")``; TLS with ``root_certificates`` (PEM bytes) or ``tls``."""

    def __init__(
        self,
        target: str = "localhost:8001",
        *,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
    ) -> None:
        options = [
            ("grpc.max_send_message_length", MESSAGE_LIMIT_BYTES),
            ("grpc.max_receive_message_length", MESSAGE_LIMIT_BYTES),
        ]
        if tls or root_certificates:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.DetectorStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def request(
        image: ImageLike,
        *,
        model: str = "",
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Iterable[int | str] = (),
        frame_id: int = 0,
        raw: bool = False,
    ) -> pb.DetectRequest:
        """Build a ``DetectRequest``."""
        request = pb.DetectRequest(model=model, image=to_image(image, raw), frame_id=frame_id)
        if score_threshold is not None:
            request.score_threshold = score_threshold
        if max_detections is not None:
            request.max_detections = max_detections
        for c in classes:
            (request.class_ids if isinstance(c, int) else request.class_names).append(c)
        return request

    def detect(self, image: ImageLike, *, timeout_s: float = 30.0, **options) -> ImageDetections:
        """One image; raises ``grpc.RpcError`` with the mapped status code on failure."""
        response = self._stub.Detect(self.request(image, **options), timeout=timeout_s, metadata=self._metadata)
        return from_response(response)

    def list_models(self, timeout_s: float = 10.0) -> list[pb.ModelInfo]:
        """The served models, default first."""
        return list(self._stub.ListModels(pb.ListModelsRequest(), timeout=timeout_s, metadata=self._metadata).models)

    def stream(
        self, frames: Iterable[ImageLike], *, timeout_s: float | None = None, raw: bool = False, **options
    ) -> Iterator[ImageDetections]:
        """Send ``frames`` on one ``DetectStream``; yields results in frame order (``frame_id`` = index).

        A frame the server could not process is yielded with ``error`` set; the stream continues. Stop iterating
        (or ``close()``) to cancel: queued frames are dropped server-side.
        """
        requests = (self.request(f, frame_id=i, raw=raw, **options) for i, f in enumerate(frames))
        call = self._stub.DetectStream(requests, timeout=timeout_s, metadata=self._metadata)
        try:
            for response in call:
                yield from_response(response)
        finally:
            call.cancel()  # no-op once the stream has finished
