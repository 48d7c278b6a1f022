"""The few user commands that run a development rig (`income_bundle_dev`, in `dev/` of the
checkout, installed by `make deps`, never in the wheel) import it through here, so a wheel install
gets a one-line error naming the command instead of an ImportError."""

from __future__ import annotations

import importlib
from types import ModuleType

from income_bundle.errors import BundleError

__all__ = ["RigMissingError", "import_rig"]

RIGS_PACKAGE = "income_bundle_dev"


class RigMissingError(BundleError):
    """A command needs the development rigs, which this install does not have."""


def import_rig(module: str, command: str) -> ModuleType:
    """`income_bundle_dev.<module>`, or a RigMissingError saying that `command` needs it."""
    try:
        return importlib.import_module(f"{RIGS_PACKAGE}.{module}")
    except ModuleNotFoundError as e:
        if e.name not in (RIGS_PACKAGE, f"{RIGS_PACKAGE}.{module}"):
            raise
        raise RigMissingError(
            f"{command} needs the development install (the rigs in dev/ of the checkout): "
            "run 'make deps', or 'pip install -e dev' in the checkout"
        ) from e
