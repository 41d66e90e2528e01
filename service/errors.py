"""Domain errors of the service and their one mapping to HTTP statuses and gRPC codes.

The engine, the decoders and the transports raise these; each front end maps them through the tables below and
nowhere else: ``/v1`` and ``yoloxpai.v1`` through ``HTTP_STATUS``/``GRPC_CODE``, the Open Inference Protocol
(``/v2``, ``inference.GRPCInferenceService``) through ``TRITON_STATUS``, which follows Triton so its clients see
the statuses and wording they expect. ``code`` is the stable machine-readable name sent to clients
(``{"error": {"code", "message"}}``, the in-band status of a stream frame) and used as the ``code`` label of
``yoloxpai_requests_total``.
Imports nothing from ``model``.
"""

from __future__ import annotations

import grpc

from service.request_ids import REQUEST_ID


class ServiceError(Exception):
    """Base of every error a client may see; ``code`` names it on the wire."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(ServiceError):
    """The bytes are not a decodable JPEG/PNG/WebP/BMP image, or raw pixels do not match their shape."""

    code = "invalid_image"


class InvalidOption(ServiceError):
    """A request option (threshold, class filter, field type, ...) is invalid."""

    code = "invalid_option"


class InvalidTensor(ServiceError):
    """An Open Inference Protocol tensor does not fit the model: unknown name, wrong datatype or shape, data of the
    wrong size, a malformed binary section."""

    code = "invalid_tensor"


class PayloadTooLarge(ServiceError):
    """The body exceeds ``max_request_bytes`` or an image exceeds ``max_image_pixels``."""

    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """The declared content type is not one the endpoint accepts."""

    code = "unsupported_media_type"


class ModelNotFound(ServiceError):
    """No model is served under the requested name."""

    code = "model_not_found"


class Unauthenticated(ServiceError):
    """API keys are configured and the request carries none or a wrong one."""

    code = "unauthenticated"


class Overloaded(ServiceError):
    """The model's queue is full; retry later (``Retry-After``)."""

    code = "overloaded"


class NotReady(ServiceError):
    """The server is still loading/warming up, or draining after SIGTERM."""

    code = "not_ready"

    def __init__(self, message: str, *, draining: bool = False) -> None:
        super().__init__(message)
        self.draining = draining


class RequestTimeout(ServiceError):
    """The client did not send its request body within ``body_timeout_s``."""

    code = "request_timeout"


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before it was answered."""

    code = "deadline_exceeded"


class ModelControlDisabled(ServiceError):
    """A load or unload request while model control is not explicit (Triton refuses them the same way)."""

    code = "model_control_disabled"


class ModelLoadFailed(ServiceError):
    """A model (version) could not be loaded: bad checksum, wrong schema, runtime error; what served still does."""

    code = "model_load_failed"


class InferenceFailed(ServiceError):
    """The backend raised while running a batch (only that batch's requests fail)."""

    code = "internal"


HTTP_STATUS: dict[type[ServiceError], int] = {
    InvalidImage: 400,
    InvalidOption: 400,
    InvalidTensor: 400,
    Unauthenticated: 401,
    ModelNotFound: 404,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InferenceFailed: 500,
    ModelControlDisabled: 409,
    ModelLoadFailed: 422,
    Overloaded: 503,
    NotReady: 503,
    DeadlineExceeded: 504,
}

GRPC_CODE: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidImage: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidOption: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidTensor: grpc.StatusCode.INVALID_ARGUMENT,
    # gRPC has no "unsupported media type": an encoded image in an unknown format is an invalid argument.
    UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    InferenceFailed: grpc.StatusCode.INTERNAL,
    ModelControlDisabled: grpc.StatusCode.FAILED_PRECONDITION,
    ModelLoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    Overloaded: grpc.StatusCode.UNAVAILABLE,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# Errors after which a retry (elsewhere or later) is the right reaction: a retry hint goes with them.
RETRYABLE: tuple[type[ServiceError], ...] = (Overloaded, NotReady)


def public_message(error: ServiceError) -> str:
    """What the client is told: an internal error's details (exception types, backend messages) stay in the
    server log; the client gets the request id to quote."""
    if error.code != ServiceError.code:
        return error.message
    rid = REQUEST_ID.get()
    return f"internal error (request id {rid}): the server log has the details" if rid else "internal error"


class ClientGone(Exception):
    """The client went away (disconnected, cancelled) before its answer was ready: nobody to answer, nothing is
    sent; counted as ``cancelled``. Not a ``ServiceError``."""


def http_headers(error: ServiceError, retry_after_s: int) -> dict[str, str]:
    """The headers that go with an HTTP error answer: the retry hint, the authentication scheme."""
    headers = {}
    if isinstance(error, RETRYABLE):
        headers["Retry-After"] = str(retry_after_s)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def grpc_trailers(error: ServiceError, retry_after_s: int) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that goes with a gRPC error status: the same retry hint as HTTP's, and the call's
    request id (an abort replaces the trailers set when the call began)."""
    rid = REQUEST_ID.get()
    trailers = (("x-request-id", rid),) if rid else ()
    return (*trailers, ("retry-after", str(retry_after_s))) if isinstance(error, RETRYABLE) else trailers


def http_status(error: ServiceError) -> int:
    """The HTTP status for ``error`` (500 for anything not in the table)."""
    return HTTP_STATUS.get(type(error), 500)


def grpc_code(error: ServiceError) -> grpc.StatusCode:
    """The gRPC status code for ``error`` (INTERNAL for anything not in the table)."""
    return GRPC_CODE.get(type(error), grpc.StatusCode.INTERNAL)


# Triton's mapping (its INVALID_ARG -> 400, NOT_FOUND -> 404, UNAVAILABLE -> 503, INTERNAL -> 500): every
# client-side fault is a 400 and every retryable condition, the timeout included, is UNAVAILABLE. Authentication is
# ours (Triton core has none).
TRITON_STATUS: dict[type[ServiceError], tuple[int, grpc.StatusCode]] = {
    InvalidImage: (400, grpc.StatusCode.INVALID_ARGUMENT),
    InvalidOption: (400, grpc.StatusCode.INVALID_ARGUMENT),
    InvalidTensor: (400, grpc.StatusCode.INVALID_ARGUMENT),
    UnsupportedMediaType: (400, grpc.StatusCode.INVALID_ARGUMENT),
    PayloadTooLarge: (400, grpc.StatusCode.INVALID_ARGUMENT),
    RequestTimeout: (408, grpc.StatusCode.DEADLINE_EXCEEDED),
    Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
    ModelNotFound: (404, grpc.StatusCode.NOT_FOUND),
    InferenceFailed: (500, grpc.StatusCode.INTERNAL),
    # Triton: a load refused outside explicit mode is UNAVAILABLE, a model that fails to load INVALID_ARG.
    ModelControlDisabled: (503, grpc.StatusCode.UNAVAILABLE),
    ModelLoadFailed: (400, grpc.StatusCode.INVALID_ARGUMENT),
    Overloaded: (503, grpc.StatusCode.UNAVAILABLE),
    NotReady: (503, grpc.StatusCode.UNAVAILABLE),
    DeadlineExceeded: (503, grpc.StatusCode.UNAVAILABLE),
}

# Triton's wording, kept at the start of our message: clients and dashboards match on these phrases.
_TRITON_WORDING: dict[type[ServiceError], str] = {
    Overloaded: "Exceeds maximum queue size",
    DeadlineExceeded: "Request timeout expired",
    ModelNotFound: "Request for unknown model",
}


def triton_status(error: ServiceError) -> tuple[int, grpc.StatusCode]:
    """``(HTTP status, gRPC code)`` of ``error`` on the Open Inference Protocol (500 / INTERNAL if unlisted)."""
    return TRITON_STATUS.get(type(error), (500, grpc.StatusCode.INTERNAL))


def triton_message(error: ServiceError, request_id: str = "") -> str:
    """The error text Triton would send: ``[request id: ID] `` when the request has one, then its wording."""
    wording = _TRITON_WORDING.get(type(error))
    message = public_message(error)
    text = f"{wording}: {message}" if wording else message
    return f"[request id: {request_id}] {text}" if request_id else text
