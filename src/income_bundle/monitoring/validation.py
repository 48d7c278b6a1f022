"""What the monitor accepts, as typed models: its request bodies and queries, the detectors' and
the logger's CloudEvents, and the rows it reads back from its store.

Everything a client sends is parsed into one of these models before anything is stored; a wrong
value is a 4xx ServingError naming the field and what was expected. JSON is parsed by
pydantic-core (jiter), whose nesting limit turns a deeply nested body into a 400, and which
refuses NaN and Infinity. Rows read from the store are checked again (an older version, or a hand,
may have written them): a row that does not validate is set aside and counted, never served.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import from_json

from income_bundle.errors import ServingError
from income_bundle.monitoring.store import DriftBatch, RecordStore, RequestRecord

__all__ = [
    "CheckedStore",
    "DriftEventData",
    "FeedbackBody",
    "LabellingQuery",
    "OutlierEventData",
    "TrafficQuery",
    "check_logger_data",
    "parse_json",
    "parse_model",
    "problems",
]

Model = TypeVar("Model", bound=BaseModel)

# A finite number (not a bool): JSON's ints and floats.
Number = Annotated[StrictInt | StrictFloat, Field(allow_inf_nan=False)]
# A detector's 0/1 flag, as the runtime writes it (an int, a bool or a float 0.0/1.0).
Flag = Literal[0, 1] | StrictBool


def problems(error: ValidationError) -> str:
    """A ValidationError in one line: each bad field, the value given where it is short, and
    what was expected."""

    def one(problem: dict[str, Any]) -> str:
        where = ".".join(map(str, problem["loc"]))
        given = problem.get("input")
        if where and isinstance(given, str | int | float | bool) and len(repr(given)) <= 60:
            where += f"={given!r}"
        return f"{where}: {problem['msg']}" if where else problem["msg"]

    return "; ".join(one(problem) for problem in error.errors(include_url=False))


def parse_json(where: str, body: bytes) -> Any:
    """JSON with bounded nesting, without NaN or Infinity; a 400 ServingError otherwise."""
    try:
        return from_json(body, allow_inf_nan=False)
    except ValueError as e:
        raise ServingError(400, f"{where}: the body is not JSON ({e})") from e


def parse_model(where: str, model: type[Model], value: Any, expected: str = "") -> Model:
    """`value` as `model`; a 400 ServingError naming each bad field (and `expected`) otherwise."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise ServingError(
            400, f"{where}: {problems(e)}{'; ' + expected if expected else ''}"
        ) from e


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedbackBody(_Strict):
    """`POST /v2/pipelines/{pipeline}/feedback`: a request's true labels, one per row."""

    id: StrictStr = Field(
        min_length=1, max_length=256, description="the request id (x-request-id of the answer)"
    )
    truth: list[StrictInt | StrictBool | StrictStr] = Field(
        min_length=1, max_length=10_000, description="one label per row: a class index or name"
    )


class LabellingQuery(_Strict):
    """`GET /v2/pipelines/{pipeline}/labelling`'s query."""

    format: Literal["csv", "jsonl", "parquet"] = "csv"
    reason: list[Literal["outlier", "drift"]] = Field(default_factory=list)


class TrafficQuery(_Strict):
    """`GET /v2/pipelines/{pipeline}/traffic`'s query: Unix times in seconds."""

    since: float | None = Field(None, allow_inf_nan=False)
    until: float | None = Field(None, allow_inf_nan=False)


def _one_or_many(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


class _DetectorData(BaseModel):
    # The detector's reply may carry more (the runtime's own fields); only these are read.
    model_config = ConfigDict(extra="ignore", frozen=True)

    requestid: StrictStr = Field(min_length=1, description="the logged request's ce-id")


class OutlierEventData(_DetectorData):
    """`io.income-bundle.outlier`: the flags and scores of a request's rows."""

    is_outlier: list[Flag] | None = None
    instance_score: list[Number] | None = None

    _lists = field_validator("is_outlier", "instance_score", mode="before")(
        lambda value: value if value is None else _one_or_many(value)
    )

    @model_validator(mode="after")
    def _same_rows(self) -> OutlierEventData:
        if (
            self.is_outlier is not None
            and self.instance_score is not None
            and len(self.is_outlier) != len(self.instance_score)
        ):
            raise ValueError("is_outlier and instance_score must have one value per row each")
        return self


class DriftEventData(_DetectorData):
    """`io.income-bundle.drift`: a batch's verdict, per-feature p-values and threshold."""

    is_drift: Annotated[list[Flag], Field(min_length=1, max_length=1)] | None = None
    p_val: list[Number] | None = None
    threshold: Annotated[list[Number], Field(min_length=1, max_length=1)] | None = None
    batch_rows: PositiveInt | None = None

    _lists = field_validator("is_drift", "p_val", "threshold", mode="before")(
        lambda value: value if value is None else _one_or_many(value)
    )


class _Tensor(BaseModel):
    """A V2 JSON tensor as far as the monitor reads it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: StrictStr
    shape: list[NonNegativeInt] = Field(min_length=1, max_length=8)
    datatype: StrictStr | None = None
    data: list[Any]


class _NumericTensor(_Tensor):
    """A tensor the monitor stores: numbers whose count matches the shape."""

    data: list[Number | list[Any]]

    @model_validator(mode="after")
    def _fits_shape(self) -> _NumericTensor:
        flat = _flatten(self.data)
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in flat
        ):
            raise ValueError("data must be finite numbers")
        if math.prod(self.shape) != len(flat):
            raise ValueError(
                f"shape {self.shape} holds {math.prod(self.shape)} values, data {len(flat)}"
            )
        return self


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in data:
        flat.extend(_flatten(value) if isinstance(value, list) else [value])
    return flat


class _V2Body(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    inputs: list[_Tensor] | None = None
    outputs: list[_Tensor] | None = None


def check_logger_data(
    where: str, data: Any, field: Literal["inputs", "outputs"], tapped: str
) -> None:
    """A logger event's V2 request or response: the tensor the monitor stores (`tapped`) must be
    numbers that fit its shape; a 400 ServingError naming the tensor otherwise."""
    body = parse_model(where, _V2Body, data)
    for position, tensor in enumerate(getattr(body, field) or []):
        if tensor.name == tapped:
            parse_model(
                f"{where}: {field}[{position}] ({tapped!r})", _NumericTensor, tensor.model_dump()
            )


# --- What the store gives back --------------------------------------------------------------


class _Stored(BaseModel):
    # Strict: text is not a number. Fields the monitor does not read are not its to check.
    model_config = ConfigDict(strict=True, extra="ignore")


class _StoredRequest(_Stored):
    """RequestRecord's fields as the store must give them back."""

    request_id: str
    pipeline: str
    source: str | None = None
    time: float | None = None
    pipeline_version: str | None = None
    rows: list[list[float]] | None = None
    predicted: list[NonNegativeInt] | None = None
    outlier_flags: list[Literal[0, 1]] | None = None
    outlier_scores: list[float] | None = None
    truth: list[NonNegativeInt] | None = None
    truth_time: float | None = None
    sequence: int | None = None


class _StoredBatch(_Stored):
    """DriftBatch's fields as the store must give them back."""

    batch_id: str
    pipeline: str
    time: float | None = None
    rows: list[list[float]] | None = None
    is_drift: bool | None = None
    p_values: list[float] | None = None
    threshold: float | None = None
    row_count: NonNegativeInt | None = None


_STORED: dict[type, type[_Stored]] = {RequestRecord: _StoredRequest, DriftBatch: _StoredBatch}

Row = TypeVar("Row", RequestRecord, DriftBatch)


class CheckedStore:
    """The monitor's reads of its store: every row read is validated; one that is not valid is
    set aside (counted in income_monitor_rows_set_aside by pipeline, table and field) and never
    served or aggregated."""

    def __init__(self, store: RecordStore) -> None:
        self.inner = store
        self._lock = threading.Lock()
        # (pipeline, table) -> {first bad field: rows}, as of the last full read of that table.
        self._set_aside: dict[tuple[str, str], dict[str, int]] = {}

    def collect(self) -> Iterable[Metric]:
        """income_monitor_rows_set_aside, for a registry (after whatever reads the tables at
        scrape time, so the count is the scrape's)."""
        family = GaugeMetricFamily(
            "income_monitor_rows_set_aside",
            "Rows of the monitor's store that do not validate (written by an older version or by "
            "hand), left out of every answer, by pipeline, table and the first bad field.",
            labels=["pipeline", "table", "field"],
        )
        with self._lock:
            for (pipeline, table), fields in sorted(self._set_aside.items()):
                for field, count in sorted(fields.items()):
                    family.add_metric([pipeline, table, field], count)
        yield family

    def _checked(self, rows: Sequence[Row], table: str, pipeline: str | None) -> list[Row]:
        kept: list[Row] = []
        bad: dict[str, int] = {}
        for row in rows:
            try:
                _STORED[type(row)].model_validate(dataclasses.asdict(row))
            except ValidationError as e:
                location = e.errors(include_url=False)[0]["loc"]
                field = str(location[0]) if location else "row"
                bad[field] = bad.get(field, 0) + 1
            else:
                kept.append(row)
        if pipeline is not None:  # a full read of the table: the count is the table's
            with self._lock:
                self._set_aside[(pipeline, table)] = bad
        return kept

    def request(self, request_id: str) -> RequestRecord | None:
        found = self.inner.request(request_id)
        checked = self._checked([found], "requests", None) if found is not None else []
        return checked[0] if checked else None

    def requests(self, pipeline: str) -> list[RequestRecord]:
        return self._checked(self.inner.requests(pipeline), "requests", pipeline)

    def drift_batches(self, pipeline: str) -> list[DriftBatch]:
        return self._checked(self.inner.drift_batches(pipeline), "drift_batches", pipeline)

    def labelled(self, pipeline: str, limit: int) -> list[RequestRecord]:
        return self._checked(self.inner.labelled(pipeline, limit), "requests", None)
