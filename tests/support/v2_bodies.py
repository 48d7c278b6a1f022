"""Building blocks of V2 request bodies for the bad-input tables."""

from __future__ import annotations

# The first row of adult.data, encoded: a valid request row for every raw-feature model.
ROW = [39, 7, 1, 1, 1, 1, 4, 1, 2174, 0, 40, 9]


def tensor(data, shape, datatype="FP32", name="predict") -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def row_with(column: int, value) -> list:
    row = list(ROW)
    row[column] = value
    return row
