"""The API-key check, one for every transport (``/v1``, ``/v2``, ``yoloxpai.v1`` and OIP over gRPC).

A request carries ``Bearer <key>`` in the HTTP ``Authorization`` header or the gRPC ``authorization`` metadata;
with no keys configured every request passes. Imports nothing from ``model``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from service.errors import Unauthenticated

HTTP_HINT = "send `Authorization: Bearer <key>`"
GRPC_HINT = "send metadata `authorization: Bearer <key>`"


def check_api_key(authorization: str | None, api_keys: list[str], hint: str = HTTP_HINT) -> None:
    """Require ``Bearer <key>`` matching one of ``api_keys`` (no-op when none are configured)."""
    if not api_keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(f"missing API key: {hint}")
    # Compare against every key (constant time each) so timing does not reveal which one nearly matched.
    matches = [hmac.compare_digest(token.strip().encode(), key.encode()) for key in api_keys]
    if not any(matches):
        raise Unauthenticated("invalid API key")


def check_grpc_key(metadata: Iterable[tuple[str, str | bytes]] | None, api_keys: list[str]) -> None:
    """``check_api_key`` on a gRPC call's invocation metadata."""
    if not api_keys:
        return
    authorization = dict(metadata or ()).get("authorization", "")
    check_api_key(str(authorization), api_keys, GRPC_HINT)
