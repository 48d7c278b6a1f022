"""MLServer runtimes for the income model folders.

Each `model-settings.json` names a class here (`income_mlserver.runtime.models.IncomeSKLearnRuntime`,
...): packaging copies this package with the core it uses into every model folder as
`income_mlserver` (see income_bundle.runtime), and MLServer imports it from there, here and in the
cluster's `seldonio/mlserver` image alike.

Each runtime is a thin subclass of a stock one that adds what stock MLServer lacks:
- `load()` refuses an artifact whose files do not match the sha256 in `metadata.json`, or that was
  built with other versions of the libraries its files need;
- `predict()` rejects a malformed request with a 400 that names the model, the input and what was
  expected, before any data reaches the model (stock MLServer answers some of these with a 500,
  or predicts on garbage);
- `predict()` records what monitoring needs (drift verdicts and per-feature p-values, outlier
  counts and scores, predicted classes) as Prometheus metrics on MLServer's metrics endpoint.
  MLServer's own custom metrics are histograms only, so these use prometheus_client directly:
  created at load, after MLServer has put an inference worker's prometheus_client into its
  multiprocess mode, so the main process aggregates them across workers.
"""

from __future__ import annotations

import os

# OutlierVAE saves and loads only with Keras 2 (tf-keras). This must happen before anything imports
# tensorflow in this process; MLServer imports this module before loading any of the income models.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.errors import InferenceError, MLServerError
from mlserver.model import MLModel
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_alibi_detect import AlibiDetectRuntime
from mlserver_sklearn import SKLearnModel
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from ..errors import ArtifactError, ServingError
from ..v2.checks import TableCheck
from ..v2.tensors import Tensor, flatten, from_json
from .artifact import verify_artifact
from .contract import ModelContract

__all__ = [
    "ArtifactRefusedError",
    "IncomeDriftRuntime",
    "IncomeExplainerRuntime",
    "IncomeOutlierRuntime",
    "IncomeSKLearnRuntime",
    "mlserver_errors",
    "request_tensors",
]


class ArtifactRefusedError(MLServerError):
    """MLServer's form of an artifact that fails verification (HTTP 500 at load)."""

    def __init__(self, msg: str):
        super().__init__(msg, status_code=500)


@contextlib.contextmanager
def mlserver_errors() -> Iterator[None]:
    """The bundle's errors raised as MLServer's own, which MLServer answers with their status:
    a refused request (ServingError) keeps its status, a refused artifact is a 500 at load."""
    try:
        yield
    except ServingError as e:
        raise MLServerError(e.message, status_code=e.status) from e
    except ArtifactError as e:
        raise ArtifactRefusedError(str(e)) from e


# The outlier threshold learnt at training is about 0.45 (mean squared reconstruction error).
OUTLIER_SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 1.0, 2.0, 5.0, 10.0, 50.0)


def _metric(kind: type, name: str, documentation: str, labels: list[str], **kwargs: Any) -> Any:
    """The process's one metric of this name, created on first use."""
    existing = REGISTRY._names_to_collectors.get(name)
    if existing is not None:  # another model in this process, or another copy of this module
        return existing
    if kind is Gauge:
        # Workers each hold a value; the newest run's is the one to report.
        kwargs.setdefault("multiprocess_mode", "mostrecent")
    return kind(name, documentation, labels, registry=REGISTRY, **kwargs)


def _output(response: InferenceResponse, name: str) -> np.ndarray | None:
    for output in response.outputs:
        if output.name == name:
            return np.asarray(NumpyCodec.decode_output(output))
    return None


def request_tensors(model: str, payload: InferenceRequest) -> list[Tensor]:
    """A request's inputs as the core's tensors, read as the gateway reads a JSON request's."""
    return [
        from_json(
            {
                "name": tensor.name,
                "datatype": getattr(tensor.datatype, "value", tensor.datatype),
                "shape": list(tensor.shape),
                "data": tensor.data.root,
            },
            f"model {model}: inputs[{index}]",
        )
        for index, tensor in enumerate(payload.inputs)
    ]


def _replace_data(payload: InferenceRequest, X: np.ndarray) -> InferenceRequest:
    """The same request with its one input replaced by X (keeps id, parameters and outputs)."""
    original = payload.inputs[0]
    encoded = NumpyCodec.encode_input(original.name, X)
    return payload.model_copy(update={"inputs": [encoded]})


def _drop_null_outputs(response: InferenceResponse) -> InferenceResponse:
    """Remove outputs alibi-detect left as None (e.g. feature_score when not asked for).

    The stock runtime encodes them as a BYTES tensor of nulls, which clients cannot decode.
    """
    response.outputs = [
        output
        for output in response.outputs
        if not all(
            value is None
            for value in flatten(output.data.root, max(len(output.shape), 1), output.name)
        )
    ]
    return response


class _VerifiedArtifact:
    """Mixin: verify the folder at load, and check every request against the model's contract
    (one [rows, features] table), as the gateway does."""

    name: str
    _metadata: dict[str, Any]
    _table: TableCheck

    def _verify(self) -> None:
        folder = Path(self._settings._source).parent  # type: ignore[attr-defined]
        self._folder = folder
        with mlserver_errors():
            self._metadata = verify_artifact(folder, self.name)
        self._table = self._declared_table(self._metadata)

    def _declared_table(self, metadata: dict[str, Any]) -> TableCheck:
        """The table check model-settings.json's inputs and the artifact's metadata declare."""
        inputs = [tensor.model_dump(mode="json") for tensor in self._settings.inputs or []]  # type: ignore[attr-defined]
        table = ModelContract.from_declaration(self.name, {"inputs": inputs}, metadata).table
        if table is None:
            raise ArtifactRefusedError(
                f"model {self.name}: model-settings.json must declare one input of shape "
                f"[-1, <features>]"
            )
        return table

    def _check(self, payload: InferenceRequest) -> np.ndarray:
        with mlserver_errors():
            return self._table.check(request_tensors(self.name, payload))


class IncomeSKLearnRuntime(_VerifiedArtifact, SKLearnModel):
    """The classifier and the preprocessor: stock sklearn runtime, verified and validated.

    A classifier whose settings name its classes (`parameters.extra.class_names`) counts its
    predictions per class in `income_predictions_total`.
    """

    async def load(self) -> bool:
        self._verify()
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        self._class_names = list(extra.get("class_names") or [])
        if self._class_names:
            self._predictions = _metric(
                Counter,
                "income_predictions",
                "Rows predicted, by model and predicted class.",
                ["model", "class"],
            )
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self._check(payload)
        response = await super().predict(payload)
        if self._class_names:
            self._count_classes(response)
        return response

    def _count_classes(self, response: InferenceResponse) -> None:
        predicted = _output(response, "predict")
        if predicted is None:
            return
        counts = np.bincount(predicted.astype(np.int64).ravel(), minlength=len(self._class_names))
        for class_name, count in zip(self._class_names, counts, strict=False):
            if count:
                self._predictions.labels(self.name, class_name).inc(int(count))


class IncomeOutlierRuntime(_VerifiedArtifact, AlibiDetectRuntime):
    """The outlier detector on preprocessed features: stock alibi-detect runtime, validated."""

    async def load(self) -> bool:
        self._verify()
        self._rows = _metric(
            Counter, "income_outlier_rows", "Rows scored by the outlier detector.", ["model"]
        )
        self._outliers = _metric(
            Counter, "income_outlier_outliers", "Rows flagged as outliers.", ["model"]
        )
        self._scores = _metric(
            Histogram,
            "income_outlier_score",
            "Outlier score per row (reconstruction error; higher is more unusual).",
            ["model"],
            buckets=OUTLIER_SCORE_BUCKETS,
        )
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        response = await super().predict(_replace_data(payload, self._check(payload)))
        response = _drop_null_outputs(response)
        self._record(response)
        return response

    def _record(self, response: InferenceResponse) -> None:
        flags = _output(response, "is_outlier")
        if flags is None:
            return
        flags = flags.ravel()
        self._rows.labels(self.name).inc(len(flags))
        self._outliers.labels(self.name).inc(int(np.count_nonzero(flags)))
        scores = _output(response, "instance_score")
        if scores is not None:
            histogram = self._scores.labels(self.name)
            for score in scores.ravel():
                histogram.observe(float(score))


class IncomeDriftRuntime(_VerifiedArtifact, AlibiDetectRuntime):
    """TabularDrift on the 12 raw features, with rare categories pooled before the test.

    The chi-squared test behind each categorical feature is only valid when every category expects
    a few rows in a batch; with 20-row batches, categories rarer than 2/20 in the reference data
    are pooled (the `category_pooling` table in metadata.json, learnt at training).
    """

    async def load(self) -> bool:
        self._verify()
        pooling = self._metadata.get("category_pooling") or {}
        self._pooling = {int(column): np.asarray(table) for column, table in pooling.items()}
        self._metrics = {
            "runs": _metric(Counter, "income_drift_runs", "Drift tests run.", ["model"]),
            "rows": _metric(Counter, "income_drift_rows", "Rows drift-tested.", ["model"]),
            "detected": _metric(
                Counter, "income_drift_detected_runs", "Drift tests that found drift.", ["model"]
            ),
            "is_drift": _metric(
                Gauge, "income_drift_is_drift", "1 if the last drift test found drift.", ["model"]
            ),
            "threshold": _metric(
                Gauge,
                "income_drift_threshold",
                "Per-feature p-value below which a feature drifts (after correction).",
                ["model"],
            ),
            "p_value": _metric(
                Gauge,
                "income_drift_feature_p_value",
                "p-value of the last drift test, per feature.",
                ["model", "feature"],
            ),
            "distance": _metric(
                Gauge,
                "income_drift_feature_distance",
                "Test statistic of the last drift test, per feature (K-S distance or chi-squared).",
                ["model", "feature"],
            ),
        }
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        X = self._check(payload)
        for column, table in self._pooling.items():
            X[:, column] = table[X[:, column].astype(np.int64)]
        response = await super().predict(_replace_data(payload, X))
        self._record(len(X), response)
        return response

    def _record(self, rows: int, response: InferenceResponse) -> None:
        is_drift = _output(response, "is_drift")
        if is_drift is None:  # no test ran (e.g. a batch still filling)
            return
        drifted = int(is_drift.ravel()[0])
        metrics = self._metrics
        metrics["runs"].labels(self.name).inc()
        metrics["rows"].labels(self.name).inc(rows)
        metrics["detected"].labels(self.name).inc(drifted)
        metrics["is_drift"].labels(self.name).set(drifted)
        threshold = _output(response, "threshold")
        if threshold is not None:
            metrics["threshold"].labels(self.name).set(float(threshold.ravel()[0]))
        names = self._table.feature_names or [str(i) for i in range(self._table.width)]
        for output, gauge in (("p_val", "p_value"), ("distance", "distance")):
            values = _output(response, output)
            if values is None:
                continue
            for feature, value in zip(names, values.ravel(), strict=False):
                metrics[gauge].labels(self.name, feature).set(float(value))


class IncomeExplainerRuntime(_VerifiedArtifact, MLModel):
    """alibi AnchorTabular over the classifier, both loaded from this folder.

    Stands in for `mlserver-alibi-explain`, which does not install beside the pinned set. The
    classifier copy in this folder is the `income` artifact's file (same sha256, checked at
    packaging), so explanations need no network round trip per sampled batch.
    """

    MAX_ROWS = 10  # an anchor search takes about a second per row

    async def load(self) -> bool:
        import joblib
        from alibi.saving import load_explainer

        self._verify()
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        self._explain_parameters = dict(extra.get("explain_parameters") or {})
        self._classifier = joblib.load(self._folder / "classifier.joblib")
        self._explainer = load_explainer(
            str(self._folder / "explainer"), predictor=self._classifier.predict
        )
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        X = self._check(payload)
        if len(X) > self.MAX_ROWS:
            raise InferenceError(
                f"model {self.name}: input {payload.inputs[0].name!r} has {len(X)} rows; "
                f"the explainer explains at most {self.MAX_ROWS} rows per request"
            )
        explanations = await asyncio.to_thread(self._explain_rows, X)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[StringCodec.encode_output("explanation", explanations)],
        )

    def _explain_rows(self, X: np.ndarray) -> list[str]:
        return [self._explainer.explain(row, **self._explain_parameters).to_json() for row in X]
