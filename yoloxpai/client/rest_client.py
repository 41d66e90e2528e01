"""A small REST client for ``POST /v1/detect`` and ``GET /v1/models`` (httpx)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from yoloxpai.client.results import Detection, ImageDetections

ImageLike = bytes | str | Path | np.ndarray


class DetectError(Exception):
    """The server answered with an error body ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def to_jpeg_bytes(image: ImageLike, quality: int = 90) -> tuple[bytes, str]:
    """Encoded bytes and their media type: files are sent as they are, arrays as JPEG."""
    if isinstance(image, np.ndarray):
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("could not encode the image as JPEG")
        return buf.tobytes(), "image/jpeg"
    if isinstance(image, (str, Path)):
        path = Path(image)
        media = {".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp"}.get(path.suffix.lower(), "image/jpeg")
        return path.read_bytes(), media
    return bytes(image), "application/octet-stream"


def parse_result(body: dict[str, Any], index: int = 0) -> ImageDetections:
    """One image of a ``DetectResponse`` JSON body."""
    result = body["results"][index]
    return ImageDetections(
        model=body["model"],
        model_version=body["model_version"],
        width=result["width"],
        height=result["height"],
        detections=tuple(
            Detection(tuple(d["box"]), d["score"], d["class_id"], d["class_name"]) for d in result["detections"]
        ),
        timing_ms=body.get("timing_ms", {}),
    )


class RestClient:
    """``RestClient("http://localhost:8000").detect("image.jpg")``; keeps one connection pool."""

    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        """``verify``: False, True (system CAs), a CA bundle path (e.g. a self-signed server cert), or a context."""
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s, verify=verify)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:200]}
            raise DetectError(response.status_code, error["code"], error["message"])
        return response.json()

    def detect(
        self,
        image: ImageLike,
        *,
        model: str | None = None,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: list[int | str] | None = None,
    ) -> ImageDetections:
        """Detect objects in one image (a path, encoded bytes, or a BGR array)."""
        data, media_type = to_jpeg_bytes(image)
        params: dict[str, Any] = {"score_threshold": score_threshold, "max_detections": max_detections}
        params = {k: v for k, v in params.items() if v is not None}
        if classes:
            params["classes"] = [str(c) for c in classes]
        path = f"/v1/models/{model}/detect" if model else "/v1/detect"
        response = self._http.post(path, content=data, params=params, headers={"content-type": media_type})
        return parse_result(self._check(response))

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``."""
        return self._check(self._http.get("/v1/models"))["models"]

    def ready(self) -> bool:
        """``GET /readyz`` is 200."""
        return self._http.get("/readyz").status_code == 200
