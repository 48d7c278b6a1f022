"""MLServer runtimes for the income model folders.

Packaging copies this file into every artifact folder as `income_runtimes.py`, and each
`model-settings.json` names a class here (`income_runtimes.IncomeSKLearnRuntime`, ...). MLServer
imports it from the model folder, here and in the cluster's `seldonio/mlserver` image alike, so it
imports only what that image has: mlserver, its sklearn and alibi-detect runtimes, numpy, alibi.

Each runtime is a thin subclass of a stock one that adds two things stock MLServer lacks:
- `load()` refuses an artifact whose files do not match the sha256 in `metadata.json`, or that was
  built with other versions of the libraries its files need;
- `predict()` rejects a malformed request with a 400 that names the model, the input and what was
  expected, before any data reaches the model (stock MLServer answers some of these with a 500,
  or predicts on garbage).
"""

from __future__ import annotations

import os

# OutlierVAE saves and loads only with Keras 2 (tf-keras). This must happen before anything imports
# tensorflow in this process; MLServer imports this module before loading any of the income models.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import asyncio  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from importlib import metadata as importlib_metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from mlserver.codecs import NumpyCodec, StringCodec  # noqa: E402
from mlserver.errors import InferenceError, MLServerError  # noqa: E402
from mlserver.model import MLModel  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput  # noqa: E402
from mlserver_alibi_detect import AlibiDetectRuntime  # noqa: E402
from mlserver_sklearn import SKLearnModel  # noqa: E402

__all__ = [
    "METADATA_FILE",
    "RUNTIME_FILE",
    "ArtifactInvalid",
    "IncomeDriftRuntime",
    "IncomeExplainerRuntime",
    "IncomeOutlierRuntime",
    "IncomeSKLearnRuntime",
    "check_request",
    "file_sha256",
    "verify_artifact",
]

METADATA_FILE = "metadata.json"
RUNTIME_FILE = "income_runtimes.py"
NUMERIC_DATATYPES = ("FP32", "FP64", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8")
# Version checks can be relaxed for experiments; a mismatch is then logged, not fatal.
ALLOW_VERSION_MISMATCH_ENV = "INCOME_ALLOW_VERSION_MISMATCH"


class ArtifactInvalid(MLServerError):
    """The model folder does not match its metadata: tampered, incomplete or other versions."""

    def __init__(self, msg: str):
        super().__init__(msg, status_code=500)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_version(distribution: str) -> str | None:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return None


VERSION_LEVELS = {"exact": None, "minor": 2, "major": 1}


def versions_compatible(built: str | None, running: str, level: str) -> bool:
    """Whether `running` may load what `built` saved: same version, or same leading parts."""
    if built is None:
        return False
    parts = VERSION_LEVELS[level]
    return built.split(".")[:parts] == running.split(".")[:parts] if parts else built == running


def verify_artifact(folder: Path | str, model_name: str) -> dict[str, Any]:
    """Check every file's sha256 and the pinned library versions; return the metadata."""
    folder = Path(folder)
    metadata_path = folder / METADATA_FILE
    rebuild = "rebuild it with 'make artifacts'"
    try:
        metadata = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        raise ArtifactInvalid(
            f"model {model_name}: {metadata_path} is missing, so the artifact cannot be verified; "
            f"{rebuild}"
        ) from None
    except json.JSONDecodeError as e:
        raise ArtifactInvalid(f"model {model_name}: {metadata_path} is not JSON ({e}); {rebuild}")

    problems = []
    for relative, expected in sorted(metadata.get("files", {}).items()):
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif (actual := file_sha256(path)) != expected:
            problems.append(f"{relative} has sha256 {actual[:12]}…, expected {expected[:12]}…")
    if not metadata.get("files"):
        problems.append(f"{METADATA_FILE} lists no files")
    if problems:
        raise ArtifactInvalid(
            f"model {model_name}: artifact {folder} does not match its {METADATA_FILE} "
            f"(tampered or incomplete): {'; '.join(problems)}; {rebuild}"
        )

    mismatches = []
    for distribution, level in sorted(metadata.get("version_checks", {}).items()):
        built = metadata.get("libraries", {}).get(distribution)
        running = installed_version(distribution)
        if running is None or not versions_compatible(built, running, level):
            mismatches.append(
                f"{distribution} {running or 'not installed'} (built with {built}, "
                f"{level} version must match)"
            )
    if mismatches:
        message = (
            f"model {model_name}: artifact {folder} was built with other library versions than "
            f"this server runs: {'; '.join(mismatches)}; install the versions in requirements.txt "
            f"or {rebuild} with the server's versions"
        )
        if os.environ.get(ALLOW_VERSION_MISMATCH_ENV) != "1":
            raise ArtifactInvalid(message + f" (or set {ALLOW_VERSION_MISMATCH_ENV}=1 to try)")
        from mlserver.logging import logger

        logger.warning(message)
    return metadata


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list | tuple):
        return [v for item in data for v in _flatten(item)]
    return [data]


def check_request(
    model_name: str,
    payload: InferenceRequest,
    width: int,
    feature_names: list[str] | None = None,
    category_sizes: dict[int, int] | None = None,
) -> np.ndarray:
    """Validate a request for a model taking one numeric [n, width] tensor; return it as floats.

    Raises InferenceError (HTTP 400, gRPC INVALID_ARGUMENT) naming the model, the input and what
    was expected.
    """
    expected = f"one numeric tensor of shape [-1, {width}]"
    if len(payload.inputs) != 1:
        names = ", ".join(repr(i.name) for i in payload.inputs) or "none"
        raise InferenceError(
            f"model {model_name}: expected {expected}, got {len(payload.inputs)} inputs ({names})"
        )
    tensor: RequestInput = payload.inputs[0]
    where = f"model {model_name}: input {tensor.name!r}"
    datatype = getattr(tensor.datatype, "value", tensor.datatype)
    if datatype not in NUMERIC_DATATYPES:
        raise InferenceError(
            f"{where} has datatype {datatype}; expected a numeric datatype "
            f"(FP32, FP64, INT32 or INT64)"
        )
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != width:
        raise InferenceError(f"{where} has shape {shape}; expected [-1, {width}] (rows × features)")
    if shape[0] < 1:
        raise InferenceError(f"{where} is an empty batch (shape {shape}); send at least one row")
    values = _flatten(tensor.data.root)
    if len(values) != shape[0] * width:
        raise InferenceError(
            f"{where} has shape {shape}, which needs {shape[0] * width} values, "
            f"but carries {len(values)}"
        )
    for index, value in enumerate(values):
        if value is None or isinstance(value, bool | str | bytes) or not _is_number(value):
            raise InferenceError(
                f"{where}: {_position(index, width, feature_names)} is {value!r}; "
                f"expected a finite number"
            )
    X = np.asarray(values, dtype=np.float64).reshape(shape)
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        row, column = (int(v) for v in bad[0])
        raise InferenceError(
            f"{where}: {_position(row * width + column, width, feature_names)} is {X[row, column]}; "
            f"expected a finite number"
        )
    for column, size in (category_sizes or {}).items():
        codes = X[:, column]
        invalid = np.flatnonzero((codes != np.round(codes)) | (codes < 0) | (codes >= size))
        if len(invalid):
            row = int(invalid[0])
            raise InferenceError(
                f"{where}: {_position(row * width + column, width, feature_names)} is "
                f"{codes[row]:g}, which is not a category code; expected an integer from 0 to "
                f"{size - 1}"
            )
    return X


def _is_number(value: Any) -> bool:
    try:
        math.isfinite(value)
    except TypeError:
        return False
    return True


def _position(flat_index: int, width: int, feature_names: list[str] | None) -> str:
    row, column = divmod(flat_index, width)
    feature = f" ({feature_names[column]!r})" if feature_names else ""
    return f"row {row}, column {column}{feature}"


def _replace_data(payload: InferenceRequest, X: np.ndarray) -> InferenceRequest:
    """The same request with its one input replaced by X (keeps id, parameters and outputs)."""
    original = payload.inputs[0]
    encoded = NumpyCodec.encode_input(original.name, X)
    return payload.model_copy(update={"inputs": [encoded]})


class _VerifiedArtifact:
    """Mixin: verify the folder at load, and hold what the metadata says about the input."""

    _metadata: dict[str, Any]

    def _verify(self) -> None:
        folder = Path(self._settings._source).parent  # type: ignore[attr-defined]
        self._folder = folder
        self._metadata = verify_artifact(folder, self.name)  # type: ignore[attr-defined]
        declared = self._settings.inputs or []  # type: ignore[attr-defined]
        if len(declared) != 1 or len(declared[0].shape) != 2:
            raise ArtifactInvalid(
                f"model {self.name}: model-settings.json must declare one input of shape "  # type: ignore[attr-defined]
                f"[-1, <features>]"
            )
        self._width = int(declared[0].shape[1])
        features = self._metadata.get("input_features") or {}
        self._feature_names = features.get("names")
        self._category_sizes = {
            int(column): len(names) for column, names in (features.get("category_map") or {}).items()
        }

    def _check(self, payload: InferenceRequest) -> np.ndarray:
        return check_request(
            self.name,  # type: ignore[attr-defined]
            payload,
            self._width,
            self._feature_names,
            self._category_sizes,
        )


class IncomeSKLearnRuntime(_VerifiedArtifact, SKLearnModel):
    """The classifier and the preprocessor: stock sklearn runtime, verified and validated."""

    async def load(self) -> bool:
        self._verify()
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self._check(payload)
        return await super().predict(payload)


class IncomeOutlierRuntime(_VerifiedArtifact, AlibiDetectRuntime):
    """The outlier detector on preprocessed features: stock alibi-detect runtime, validated."""

    async def load(self) -> bool:
        self._verify()
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return await super().predict(_replace_data(payload, self._check(payload)))


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
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        X = self._check(payload)
        for column, table in self._pooling.items():
            X[:, column] = table[X[:, column].astype(np.int64)]
        return await super().predict(_replace_data(payload, X))


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
