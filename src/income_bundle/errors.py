"""Errors raised by the bundle: each says what is wrong and how to fix it."""

__all__ = ["ArtifactError", "BundleError", "DataError", "GatewayError"]


class BundleError(Exception):
    """Base class of the bundle's own errors."""


class DataError(BundleError):
    """The Adult data files are missing, corrupt or unreadable."""


class ArtifactError(BundleError):
    """An artifact folder is missing, tampered with, or built with other library versions."""


class GatewayError(BundleError):
    """The one base of errors answered to a gateway client, carrying its HTTP status (as MLServer's
    `MLServerError(msg, status_code)`): the REST front answers `{"error": message}` with the status,
    the gRPC front the matching status code; subclasses only fix the status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
