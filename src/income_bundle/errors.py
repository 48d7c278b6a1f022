"""Errors raised by the bundle: each says what is wrong and how to fix it."""

__all__ = ["ArtifactError", "BundleError", "DataError"]


class BundleError(Exception):
    """Base class of the bundle's own errors."""


class DataError(BundleError):
    """The Adult data files are missing, corrupt or unreadable."""


class ArtifactError(BundleError):
    """An artifact folder is missing, tampered with, or built with other library versions."""
