"""The request id rule: what the gateway accepts as an `x-request-id` (header, gRPC metadata or
the body's `id`) and echoes back.

An id goes back to the client as a response header and, on a cluster, through Envoy and Kafka
(Seldon keys every pipeline message by it), so it must be a valid header value everywhere:
- visible ASCII and inner spaces only. RFC 9110 field values exclude CR, LF and NUL (a newline
  would split the response header; uvicorn refuses to send it and drops the connection), leading
  and trailing spaces are stripped by every parser, and gRPC metadata values are ASCII.
- at most 1024 characters. Seldon's ids are 20-character xids (`scheduler/pkg/util/ids.go`,
  v2.10.2) and MLServer's 36-character UUIDs; Envoy in seldon-mesh keeps its default 60 KiB for
  all request headers (`scheduler/pkg/envoy/xdscache/resource.go` sets no
  `max_request_headers_kb`), and Node's HTTP client refuses responses whose headers pass 16 KiB,
  so an id echoed back must stay far below both.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from income_bundle.errors import ServingError

__all__ = ["MAX_REQUEST_ID_LENGTH", "REQUEST_ID_HEADER", "check_request_id", "new_request_id"]

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 1024
_VALID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def check_request_id(value: Any, source: str) -> str | None:
    """`value` when it is a valid id, None when absent (None or ""), else ServingError(400)
    naming `source` (e.g. "the 'x-request-id' header") and the rule."""
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise ServingError(
            400, f"{source} must be a string, got {type(value).__name__} {_shorten(value)}"
        )
    if len(value) > MAX_REQUEST_ID_LENGTH:
        raise ServingError(
            400,
            f"{source} is {len(value)} characters long; a request id has at most "
            f"{MAX_REQUEST_ID_LENGTH}",
        )
    if _VALID.fullmatch(value) is None:
        bad = next(
            (c for c in value if not " " <= c <= "~"), value[0] if value[0] == " " else value[-1]
        )
        raise ServingError(
            400,
            f"{source} {_shorten(value)} contains {bad!r}; a request id is visible ASCII "
            "characters with no leading or trailing space (no control characters)",
        )
    return value


def new_request_id() -> str:
    return str(uuid.uuid4())


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
