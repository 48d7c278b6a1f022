"""The V2 (Open Inference Protocol) datatypes: the one table of what each datatype is.

For every datatype the protocol names: the numpy dtype of its raw bytes (little-endian, as the
binary extension and gRPC's raw contents carry them), its item size, its kind of value, the
smallest and largest value it holds, and the field of gRPC's `InferTensorContents` that carries
its typed contents. Nothing else in the bundle writes down a datatype or its limits.

Imports only numpy: packaging copies it into every model folder (see income_bundle.runtime).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DATATYPES", "NUMBER_KINDS", "Datatype"]

# Kinds whose values are numbers a model computes with (BOOL and BYTES are not).
NUMBER_KINDS = frozenset({"int", "uint", "float"})


@dataclass(frozen=True)
class Datatype:
    """One V2 datatype."""

    name: str
    dtype: np.dtype | None  # of its raw bytes; None for BYTES (length-prefixed strings)
    kind: str  # "bool", "int", "uint", "float" or "bytes"
    low: int | float | None  # the smallest value it holds; None for BYTES
    high: int | float | None  # the largest finite value it holds; None for BYTES
    grpc_field: str  # the InferTensorContents field of its typed contents

    @property
    def itemsize(self) -> int | None:
        """Bytes per value in raw form; None for BYTES, whose values have their own lengths."""
        return None if self.dtype is None else self.dtype.itemsize

    @property
    def is_number(self) -> bool:
        return self.kind in NUMBER_KINDS


def _datatype(name: str, dtype: str | None, grpc_field: str) -> Datatype:
    if dtype is None:
        return Datatype(name, None, "bytes", None, None, grpc_field)
    numpy_dtype = np.dtype(dtype)
    if numpy_dtype.kind == "b":
        return Datatype(name, numpy_dtype, "bool", 0, 1, grpc_field)
    if numpy_dtype.kind == "f":
        info = np.finfo(numpy_dtype)
        return Datatype(name, numpy_dtype, "float", float(info.min), float(info.max), grpc_field)
    limits = np.iinfo(numpy_dtype)
    kind = "uint" if numpy_dtype.kind == "u" else "int"
    return Datatype(name, numpy_dtype, kind, int(limits.min), int(limits.max), grpc_field)


DATATYPES: dict[str, Datatype] = {
    datatype.name: datatype
    for datatype in (
        _datatype("BOOL", "?", "bool_contents"),
        _datatype("UINT8", "<u1", "uint_contents"),
        _datatype("UINT16", "<u2", "uint_contents"),
        _datatype("UINT32", "<u4", "uint_contents"),
        _datatype("UINT64", "<u8", "uint64_contents"),
        _datatype("INT8", "<i1", "int_contents"),
        _datatype("INT16", "<i2", "int_contents"),
        _datatype("INT32", "<i4", "int_contents"),
        _datatype("INT64", "<i8", "int64_contents"),
        _datatype("FP16", "<f2", "fp32_contents"),
        _datatype("FP32", "<f4", "fp32_contents"),
        _datatype("FP64", "<f8", "fp64_contents"),
        _datatype("BYTES", None, "bytes_contents"),
    )
}
