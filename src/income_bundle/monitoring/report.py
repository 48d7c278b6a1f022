"""A static drift report for people who want to look: one self-contained HTML file.

For a window of traffic (the gateway's JSONL traffic log, or a scenario .npz) it runs the served
drift detector (`detectors/income-drift`, verified like the runtime verifies it) once over every
row of the window, with the same rare-category pooling `IncomeDriftRuntime` applies, and shows per
feature the reference and current distributions (bar charts over the detector's categories,
histograms for numbers), the test statistic and p-value, the threshold and the verdict.

The served pipeline tests batches of 20 rows; one test over the whole window has more power, so a
window can drift here while no single batch did. The p-values are exactly what the detector's
`predict` returns for the window's rows.

Traffic log format, one line per pipeline request:
`{"request_id": str, "timestamp": unix seconds, "pipeline": str, "rows": [[12 numbers], ...]}`.
"""

from __future__ import annotations

import os

# The detector artifact loads through alibi-detect, which imports TensorFlow: Keras 2, as served.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from income_bundle import integrity
from income_bundle.data import FEATURE_NAMES
from income_bundle.errors import ArtifactError, BundleError
from income_bundle.paths import artifact_dir

__all__ = [
    "DRIFT_MODEL",
    "DriftReference",
    "DriftResult",
    "FeatureDrift",
    "TrafficWindow",
    "load_reference",
    "measure_drift",
    "parse_time",
    "read_traffic",
    "render_html",
    "write_report",
]

DRIFT_MODEL = "income-drift"
WIDTH = 12
HISTOGRAM_BINS = 30
REFERENCE_COLOR = "#4c72b0"
CURRENT_COLOR = "#dd8452"


class ReportError(BundleError):
    """The report cannot be made: the traffic file or its window is unusable."""


@dataclass(frozen=True)
class TrafficWindow:
    """The rows of the traffic a report looks at, and where they came from."""

    source: Path
    rows: np.ndarray  # (n, 12) raw feature values, as the pipeline received them
    requests: int | None  # pipeline requests in the window (None for a scenario file)
    first: float | None  # unix seconds of the window's first and last request
    last: float | None
    description: str  # the window as chosen, e.g. "since ..., last 200 rows"


@dataclass(frozen=True)
class DriftReference:
    """The served drift detector, its reference rows and how it pools rare categories."""

    folder: Path
    detector: Any  # alibi_detect.cd.TabularDrift
    metadata: dict[str, Any]
    feature_names: list[str]
    category_map: dict[int, list[str]]
    pooling: dict[int, np.ndarray]  # column -> code -> tested category

    @property
    def x_ref(self) -> np.ndarray:
        """Reference rows, pooled (the detector was fitted on pooled rows)."""
        return np.asarray(self.detector.x_ref)

    def pool(self, X: np.ndarray) -> np.ndarray:
        """The rows as the detector tests them: rare categories pooled, as IncomeDriftRuntime does."""
        X = np.array(X, dtype=np.float64, copy=True)
        for column, table in self.pooling.items():
            X[:, column] = table[X[:, column].astype(np.int64)]
        return X


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    column: int
    categorical: bool
    statistic: float  # K-S distance (numerical) or chi-squared statistic (categorical)
    p_value: float
    drifted: bool  # p_value below the threshold

    @property
    def test(self) -> str:
        return "chi-squared" if self.categorical else "Kolmogorov-Smirnov"


@dataclass(frozen=True)
class DriftResult:
    features: list[FeatureDrift]
    threshold: float  # per-feature p-value threshold (p_val / features, Bonferroni)
    is_drift: bool
    rows: int

    @property
    def drifted(self) -> list[str]:
        return [feature.name for feature in self.features if feature.drifted]

    @property
    def verdict(self) -> str:
        return "drift" if self.is_drift else "no drift"


def parse_time(text: str) -> float:
    """Unix seconds from unix seconds or ISO-8601 (UTC unless the time has an offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(
            f"{text!r} is neither unix seconds nor an ISO-8601 time "
            f"(e.g. 2026-11-23T10:00:00Z or 1795400000)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _check_rows(
    where: str, rows: Any, feature_names: list[str] | None, categories: dict[int, int] | None
) -> np.ndarray:
    """The rows as a float array, checked as the drift runtime checks a request."""
    if not isinstance(rows, list) or not rows:
        raise ReportError(f"{where}: 'rows' must be a non-empty list of rows of {WIDTH} numbers")
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != WIDTH:
            size = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
            names = f" ({', '.join(feature_names)})" if feature_names else ""
            raise ReportError(f"{where}: row {index} has {size}; expected {WIDTH} values{names}")
    tensor = integrity.Tensor("rows", "FP64", [len(rows), WIDTH], rows)
    try:
        return integrity.check_request(DRIFT_MODEL, [tensor], WIDTH, feature_names, categories)
    except integrity.BadRequestError as e:
        raise ReportError(f"{where}: {e}") from e


def _window_text(since: float | None, until: float | None, last_rows: int | None, pipeline):
    parts = []
    if pipeline:
        parts.append(f"pipeline {pipeline}")
    if since is not None:
        parts.append(f"since {_iso(since)}")
    if until is not None:
        parts.append(f"until {_iso(until)}")
    if last_rows is not None:
        parts.append(f"last {last_rows} rows")
    return ", ".join(parts) or "all traffic"


def read_traffic(
    path: Path | str,
    *,
    since: float | None = None,
    until: float | None = None,
    last_rows: int | None = None,
    pipeline: str | None = None,
    feature_names: list[str] | None = None,
    categories: dict[int, int] | None = None,
) -> TrafficWindow:
    """The rows of a traffic log (JSONL) or scenario (.npz) inside a window.

    The window keeps requests with since <= timestamp < until (of `pipeline`, if given), in time
    order, then the last `last_rows` rows. `feature_names` (default: the Adult features) name the
    columns in errors; `categories` (column -> number of codes) checks the categorical codes as
    the drift runtime would. Raises ReportError naming the file, and the
    line, of anything unusable, and when the window holds no rows.
    """
    path = Path(path)
    feature_names = feature_names or FEATURE_NAMES
    if last_rows is not None and last_rows < 1:
        raise ReportError(f"--last-rows must be at least 1, got {last_rows}")
    if since is not None and until is not None and until <= since:
        raise ReportError(f"the window ends ({_iso(until)}) before it starts ({_iso(since)})")
    if not path.is_file():
        raise ReportError(
            f"{path}: no such file; expected the gateway's JSONL traffic log or a scenario .npz "
            f"(data/scenarios/)"
        )
    description = _window_text(since, until, last_rows, pipeline)
    if path.suffix == ".npz":
        if since is not None or until is not None or pipeline:
            raise ReportError(
                f"{path}: a scenario file has no timestamps or pipelines; --since, --until and "
                f"--pipeline need a JSONL traffic log (use --last-rows)"
            )
        return _read_scenario(path, last_rows, description, feature_names, categories)

    requests: list[tuple[float, np.ndarray]] = []
    total_rows, first_seen, last_seen = 0, math.inf, -math.inf
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReportError(f"{where}: not a JSON object ({e.msg})") from e
            if not isinstance(record, dict):
                raise ReportError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in ("timestamp", "rows") if key not in record]
            if missing:
                raise ReportError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
            timestamp = record["timestamp"]
            if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
                raise ReportError(f"{where}: 'timestamp' is {timestamp!r}; expected unix seconds")
            rows = _check_rows(where, record["rows"], feature_names, categories)
            total_rows += len(rows)
            first_seen, last_seen = min(first_seen, timestamp), max(last_seen, timestamp)
            if pipeline and record.get("pipeline") != pipeline:
                continue
            if (since is not None and timestamp < since) or (
                until is not None and timestamp >= until
            ):
                continue
            requests.append((float(timestamp), rows))

    if not requests:
        held = (
            f"it holds {total_rows} rows from {_iso(first_seen)} to {_iso(last_seen)}"
            if total_rows
            else "it holds no traffic"
        )
        raise ReportError(f"{path}: no rows in the window ({description}); {held}")
    requests.sort(key=lambda request: request[0])  # stable: equal timestamps keep file order
    X = np.concatenate([rows for _, rows in requests])
    if last_rows is not None:
        X = X[-last_rows:]
    return TrafficWindow(path, X, len(requests), requests[0][0], requests[-1][0], description)


def _read_scenario(path, last_rows, description, feature_names, categories) -> TrafficWindow:
    try:
        with np.load(path) as arrays:
            if "X" not in arrays.files:
                raise ReportError(
                    f"{path}: no 'X' array (it has {', '.join(arrays.files) or 'none'}); "
                    f"expected a scenario file as training writes them"
                )
            X = np.asarray(arrays["X"], dtype=np.float64)
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: not a readable .npz file ({e})") from e
    if X.ndim != 2 or X.shape[1] != WIDTH:
        raise ReportError(f"{path}: X has shape {list(X.shape)}; expected rows of {WIDTH} features")
    if last_rows is not None:
        X = X[-last_rows:]
    if not len(X):
        raise ReportError(f"{path}: no rows in the window ({description}); X is empty")
    X = _check_rows(f"{path} X", X.tolist(), feature_names, categories)
    return TrafficWindow(path, X, None, None, None, description)


def load_reference(folder: Path | str | None = None) -> DriftReference:
    """The drift detector artifact, verified (file hashes, library versions), then loaded."""
    folder = Path(folder) if folder is not None else artifact_dir(DRIFT_MODEL)
    try:
        metadata = integrity.verify_artifact(folder, DRIFT_MODEL)
        settings = json.loads((folder / "model-settings.json").read_text())
    except integrity.ArtifactIntegrityError as e:
        raise ArtifactError(str(e)) from e
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"model {DRIFT_MODEL}: {folder}/model-settings.json: {e}") from e
    from alibi_detect.saving import load_detector

    detector = load_detector(str(folder / settings["parameters"]["uri"]))
    features = metadata["input_features"]
    return DriftReference(
        folder=folder,
        detector=detector,
        metadata=metadata,
        feature_names=list(features["names"]),
        category_map={int(k): list(v) for k, v in features["category_map"].items()},
        pooling={int(k): np.asarray(v) for k, v in metadata.get("category_pooling", {}).items()},
    )


def measure_drift(reference: DriftReference, rows: np.ndarray) -> DriftResult:
    """The detector's verdict on the rows, tested at once as one batch, per feature."""
    prediction = reference.detector.predict(
        reference.pool(rows), drift_type="batch", return_p_val=True, return_distance=True
    )["data"]
    threshold = float(prediction["threshold"])
    features = [
        FeatureDrift(
            name=name,
            column=column,
            categorical=column in reference.category_map,
            statistic=float(prediction["distance"][column]),
            p_value=float(prediction["p_val"][column]),
            drifted=bool(prediction["p_val"][column] < threshold),
        )
        for column, name in enumerate(reference.feature_names)
    ]
    return DriftResult(features, threshold, bool(prediction["is_drift"]), len(rows))


def _categories(reference: DriftReference, column: int) -> list[tuple[int, str, list[str]]]:
    """(tested code, its name, names of the rare categories pooled into it) per category."""
    names = reference.category_map[column]
    table = reference.pooling.get(column, np.arange(len(names)))
    tested = sorted({int(code) for code in table})
    return [
        (code, names[code], [names[c] for c in range(len(names)) if table[c] == code and c != code])
        for code in tested
    ]


def _label(name: str, pooled: list[str]) -> str:
    return f"{name} +{len(pooled)}" if pooled else name


def _pooling_note(reference: DriftReference, column: int, rows: np.ndarray) -> str:
    """What the pooled bars stand for, and the window's rows in each pooled group by category."""
    names = reference.category_map[column]
    codes, counts = np.unique(rows[:, column].astype(np.int64), return_counts=True)
    seen = dict(zip(codes.tolist(), counts.tolist(), strict=True))
    notes = []
    for code, name, pooled in _categories(reference, column):
        if not pooled:
            continue
        members = [c for c in range(len(names)) if int(reference.pooling[column][c]) == code]
        current = ", ".join(f"{names[c]} {seen[c]}" for c in members if seen.get(c))
        notes.append(
            f"'{html.escape(_label(name, pooled))}' = {html.escape(', '.join([name, *pooled]))}"
            f" (in this window: {html.escape(current or 'none')})"
        )
    if not notes:
        return ""
    settings = reference.metadata.get("training", {}).get("drift", {})
    rare = ""
    if settings.get("min_expected_count") and settings.get("batch_size"):
        rare = f", categories rarer than {settings['min_expected_count'] / settings['batch_size']:.0%} of the reference"
    return f". Tested together, as the detector pools them{rare}: {'; '.join(notes)}"


def _chart(reference: DriftReference, feature: FeatureDrift, current: np.ndarray) -> str:
    """One PNG of reference vs current for the feature, base64-encoded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ref = reference.x_ref[:, feature.column]
    cur = current[:, feature.column]
    figure, axes = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    try:
        if feature.categorical:
            categories = _categories(reference, feature.column)
            labels = [_label(name, pooled) for _, name, pooled in categories]
            positions = np.arange(len(categories))
            shares = [
                [float(np.mean(values == code)) for code, _, _ in categories]
                for values in (ref, cur)
            ]
            axes.barh(positions - 0.2, shares[0], 0.4, label="reference", color=REFERENCE_COLOR)
            axes.barh(positions + 0.2, shares[1], 0.4, label="current", color=CURRENT_COLOR)
            axes.set_yticks(positions, labels)
            axes.invert_yaxis()
            axes.set_xlabel("share of rows")
        else:
            edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=HISTOGRAM_BINS)
            for values, label, color in (
                (ref, "reference", REFERENCE_COLOR),
                (cur, "current", CURRENT_COLOR),
            ):
                weights = np.full(len(values), 1 / len(values))
                axes.hist(
                    values,
                    bins=edges,
                    weights=weights,
                    histtype="stepfilled",
                    alpha=0.45,
                    label=label,
                    color=color,
                )
            _, counts = np.unique(ref, return_counts=True)
            if counts.max() > len(ref) / 2:  # one value dominates (Capital Gain's zeros)
                axes.set_yscale("log")
            axes.set_xlabel(feature.name)
            axes.set_ylabel("share of rows")
        marker = "DRIFT" if feature.drifted else "no drift"
        axes.set_title(
            f"{feature.name}: p = {feature.p_value:.3g} ({marker})",
            color="#b00020" if feature.drifted else "black",
        )
        axes.legend(loc="best", fontsize="small")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
.verdict { padding: 0.8em 1.2em; border-radius: 6px; font-size: 1.2em; }
.verdict.drift { background: #fde2e4; border: 1px solid #b00020; }
.verdict.none { background: #e3f4e8; border: 1px solid #2e7d32; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.drifted td { color: #b00020; font-weight: 600; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(32em, 1fr)); gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def render_html(reference: DriftReference, window: TrafficWindow, result: DriftResult) -> str:
    """The report as one HTML document, charts embedded (no file or network needed to view it)."""
    e = html.escape
    current = reference.pool(window.rows)
    verdict_class = "drift" if result.is_drift else "none"
    verdict = (
        f"<strong>Drift</strong> in {e(', '.join(result.drifted))}"
        if result.is_drift
        else "<strong>No drift</strong>: every feature's p-value is at or above the threshold"
    )
    drift_settings = reference.metadata.get("training", {}).get("drift", {})
    if window.first is not None and window.last is not None:
        span = f"{_iso(window.first)} to {_iso(window.last)}, {window.requests} requests"
    else:
        span = "scenario file (no timestamps)"
    summary = [
        ("Traffic", str(window.source)),
        ("Window", f"{window.description}: {span}"),
        ("Rows tested", f"{result.rows} (one test over the whole window)"),
        (
            "Reference",
            f"{len(reference.x_ref)} rows of {reference.folder} (created {reference.metadata.get('created', '?')})",
        ),
        (
            "Test",
            f"TabularDrift, p-value {drift_settings.get('p_val', '?')} with "
            f"{drift_settings.get('correction', '?')} correction: a feature drifts when its "
            f"p-value is below {result.threshold:.4g}",
        ),
        ("Generated", _iso(datetime.now(UTC).timestamp())),
    ]
    rows = "\n".join(
        f'<tr class="{"drifted" if f.drifted else ""}"><td>{e(f.name)}</td><td>{f.test}</td>'
        f'<td class="number">{f.statistic:.4g}</td><td class="number">{f.p_value:.4g}</td>'
        f"<td>{'drift' if f.drifted else 'no'}</td></tr>"
        for f in result.features
    )
    figures = []
    for feature in result.features:
        caption = f"{e(feature.name)}: {feature.test} statistic {feature.statistic:.4g}, p-value {feature.p_value:.4g}"
        if feature.categorical:
            caption += _pooling_note(reference, feature.column, window.rows)
        figures.append(
            f'<figure><img alt="{e(feature.name)}: reference vs current" '
            f'src="data:image/png;base64,{_chart(reference, feature, current)}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    summary_rows = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary)
    figures_html = "\n".join(figures)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Income drift report: {result.verdict}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Income drift report</h1>
<p class="verdict {verdict_class}">{verdict} (threshold {result.threshold:.4g}).</p>
<table>
{summary_rows}
</table>
<h2>Per feature</h2>
<table>
<tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th><th>drift</th></tr>
{rows}
</table>
<p>The served pipeline tests batches of 20 rows; this report tests the window's rows at once,
so it sees smaller shifts than a single batch would. At p-value {e(str(drift_settings.get("p_val", "?")))}
about one window in twenty of traffic like the reference is flagged by chance.</p>
<h2>Reference vs current</h2>
<div class="charts">
{figures_html}
</div>
</body>
</html>
"""


def write_report(
    traffic: Path | str,
    output: Path | str,
    *,
    since: float | None = None,
    until: float | None = None,
    last_rows: int | None = None,
    pipeline: str | None = None,
    detector: Path | str | None = None,
) -> DriftResult:
    """Read the window, test it against the drift detector, write the HTML report."""
    folder = Path(detector) if detector is not None else artifact_dir(DRIFT_MODEL)
    try:  # the feature names and category codes check the traffic before the slow load
        features = json.loads((folder / integrity.METADATA_FILE).read_text())["input_features"]
        names = list(features["names"])
        categories = {int(k): len(v) for k, v in features["category_map"].items()}
    except (OSError, KeyError, json.JSONDecodeError):
        names, categories = None, None  # load_reference says what is wrong with the folder
    window = read_traffic(
        traffic,
        since=since,
        until=until,
        last_rows=last_rows,
        pipeline=pipeline,
        feature_names=names,
        categories=categories,
    )
    reference = load_reference(folder)
    result = measure_drift(reference, window.rows)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(reference, window, result), encoding="utf-8")
    return result
