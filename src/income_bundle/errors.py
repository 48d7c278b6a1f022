"""Errors raised by the bundle, each saying what is wrong and how to fix it, and the one base of
errors answered to a client with the status maps that put it on the wire.

A leaf module: it imports nothing of the bundle, so every layer can raise these without importing
upward (MLServer keeps its `MLServerError(msg, status_code)` the same way, in `mlserver/errors.py`).
"""

from __future__ import annotations

import grpc

__all__ = [
    "GRPC_STATUS",
    "ArtifactError",
    "BundleError",
    "DataError",
    "ServingError",
    "grpc_status",
]


class BundleError(Exception):
    """Base class of the bundle's own errors."""


class DataError(BundleError):
    """The Adult data files are missing, corrupt or unreadable."""


class ArtifactError(BundleError):
    """An artifact folder is missing, tampered with, or built with other library versions."""


class ServingError(BundleError):
    """The one base of errors answered to a client of the gateway or the monitor, carrying its HTTP
    status: REST answers `{"error": message}` with the status, gRPC the code `grpc_status` maps it
    to; subclasses only fix the status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# HTTP status -> gRPC code, as grpc's doc/http-grpc-status-mapping.md maps them.
GRPC_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    # MLServer answered malformed HTTP; UNAVAILABLE as in the same document.
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_status(status: int) -> grpc.StatusCode:
    """The gRPC code a ServingError of HTTP `status` is answered with (UNKNOWN when unmapped)."""
    return GRPC_STATUS.get(status, grpc.StatusCode.UNKNOWN)
