"""A static drift report for people who want to look: one self-contained HTML file.

For a window of traffic (the gateway's JSONL traffic log, or a scenario .npz) it runs the served
drift detector (`detectors/income-drift`, verified like the runtime verifies it) once over every
row of the window, with the same rare-category pooling `IncomeDriftRuntime` applies, and shows per
feature the reference and current distributions (bars per category as the traffic holds them,
with the groups the detector pools and tests as one category marked; histograms for numbers),
the test statistic and p-value, the threshold and the verdict.

The served pipeline tests batches of 20 rows; one test over the whole window has more power, so a
window can drift here while no single batch did. The p-values are exactly what the detector's
`predict` returns for the window's rows.

Traffic log format, one line per pipeline request:
`{"request_id": str, "timestamp": unix seconds, "pipeline": str, "rows": [[12 numbers], ...]}`.
"""

from __future__ import annotations

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

from income_bundle import quiet
from income_bundle.data import FEATURE_NAMES
from income_bundle.errors import ArtifactError, BundleError, ServingError
from income_bundle.paths import artifact_dir, project_root
from income_bundle.runtime.artifact import METADATA_FILE, verify_artifact
from income_bundle.v2.checks import TableCheck
from income_bundle.v2.tensors import Tensor

__all__ = [
    "DRIFT_MODEL",
    "CategoryGroup",
    "DriftReference",
    "DriftResult",
    "FeatureDrift",
    "TrafficWindow",
    "category_groups",
    "format_p_value",
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
POOLED_SHADE = "#ececec"
# The smallest p-value printed as a number: a chi-squared or K-S tail below it underflows to 0.
SMALLEST_P_VALUE = 1e-300


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
    tensor = Tensor("rows", "FP64", [len(rows), WIDTH], rows)
    try:
        return TableCheck(DRIFT_MODEL, WIDTH, feature_names, categories or {}).check([tensor])
    except ServingError as e:
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
        metadata = verify_artifact(folder, DRIFT_MODEL)
        settings = json.loads((folder / "model-settings.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"model {DRIFT_MODEL}: {folder}/model-settings.json: {e}") from e
    quiet.import_tensorflow()  # alibi-detect imports it; Keras 2, as served
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


def format_p_value(p_value: float, digits: int = 3) -> str:
    """A p-value as text; one below the float range's reach (it underflows to 0) as `< 1e-300`."""
    if p_value < SMALLEST_P_VALUE:
        return f"< {SMALLEST_P_VALUE:g}"
    return f"{p_value:.{digits}g}"


def _p_equals(p_value: float) -> str:
    text = format_p_value(p_value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _shown_path(path: Path) -> str:
    """A path as the report shows it: relative to the checkout, else only its name (the report
    does not publish the layout of the machine that made it)."""
    try:
        return str(Path(path).resolve().relative_to(project_root()))
    except ValueError:
        return Path(path).name


@dataclass(frozen=True)
class CategoryGroup:
    """Raw categories the detector tests as one category (a single member: tested alone), and
    what the reference and the window hold of them."""

    members: list[str]  # category names, the one the detector tests them as first
    reference: float  # the group's share of the reference (the artifact keeps only that)
    current: dict[str, float]  # each member's share of the window's rows, as received
    counts: dict[str, int]  # each member's rows in the window

    @property
    def pooled(self) -> bool:
        return len(self.members) > 1


def category_groups(
    reference: DriftReference, column: int, rows: np.ndarray
) -> list[CategoryGroup]:
    """Per category the detector tests, its raw categories with their shares: what the chart
    draws. `rows` are the window's rows as received (not pooled)."""
    names = reference.category_map[column]
    table = reference.pooling.get(column, np.arange(len(names)))
    raw = np.asarray(rows)[:, column].astype(np.int64)
    pooled_ref = reference.x_ref[:, column]
    groups = []
    for tested in sorted({int(code) for code in table}):
        members = [tested, *(c for c in range(len(names)) if table[c] == tested and c != tested)]
        counts = {names[c]: int(np.sum(raw == c)) for c in members}
        groups.append(
            CategoryGroup(
                members=[names[c] for c in members],
                reference=float(np.mean(pooled_ref == tested)),
                current={name: count / len(raw) for name, count in counts.items()},
                counts=counts,
            )
        )
    return groups


def _percent(share: float) -> str:
    return f"{share:.0%}" if share == 0 or share >= 0.01 else "<1%"


def _pooling_note(reference: DriftReference, column: int, rows: np.ndarray) -> str:
    """The pooled groups, what the reference and the window hold of each, by raw category."""
    notes = []
    for group in category_groups(reference, column, rows):
        if not group.pooled:
            continue
        held = ", ".join(f"{name} {n:,}" for name, n in group.counts.items() if n) or "none"
        notes.append(
            f"{html.escape(', '.join(group.members))}: reference {_percent(group.reference)} "
            f"(kept pooled, so one bar), this window {_percent(sum(group.current.values()))} "
            f"({html.escape(held)})"
        )
    if not notes:
        return ""
    settings = reference.metadata.get("training", {}).get("drift", {})
    rare = "rare categories"
    if settings.get("min_expected_count") and settings.get("batch_size"):
        share = settings["min_expected_count"] / settings["batch_size"]
        rare = f"categories rarer than {share:.0%} of the reference"
    return f". Shaded: {rare}, tested together as one category: {'; '.join(notes)}"


def _categorical_chart(axes, groups: list[CategoryGroup]) -> list:
    """Bars per raw category; pooled groups shaded, their reference share as one hatched bar
    across the group, and a bracket saying what the test compared. Returns legend handles."""
    from matplotlib import patches, transforms

    order = [name for group in groups for name in group.members]
    row = {name: index for index, name in enumerate(order)}
    edge = transforms.blended_transform_factory(axes.transAxes, axes.transData)
    widest = max(max(g.reference, *g.current.values()) for g in groups)
    current_y = {}  # where each category's current bar is drawn
    for group in groups:
        if not group.pooled:
            (name,) = group.members
            axes.barh(row[name] - 0.2, group.reference, 0.4, color=REFERENCE_COLOR)
            axes.barh(row[name] + 0.2, group.current[name], 0.4, color=CURRENT_COLOR)
            current_y[name] = row[name] + 0.2
            continue
        top, bottom = row[group.members[0]], row[group.members[-1]]
        axes.axhspan(top - 0.5, bottom + 0.5, color=POOLED_SHADE, zorder=0, linewidth=0)
        axes.barh(
            (top + bottom) / 2, group.reference, bottom - top + 0.8, color=REFERENCE_COLOR,
            alpha=0.3, hatch="//", edgecolor=REFERENCE_COLOR, linewidth=0, zorder=1,
        )  # fmt: skip
        for name in group.members:
            axes.barh(row[name], group.current[name], 0.5, color=CURRENT_COLOR, zorder=2)
            current_y[name] = row[name]
        axes.plot(
            [1.02, 1.035, 1.035, 1.02], [top - 0.35, top - 0.35, bottom + 0.35, bottom + 0.35],
            color="#555", linewidth=1, transform=edge, clip_on=False,
        )  # fmt: skip
        axes.text(
            1.05, (top + bottom) / 2,
            f"tested as one\nreference {_percent(group.reference)}\n"
            f"current {_percent(sum(group.current.values()))}",
            transform=edge, va="center", ha="left", fontsize="small", color="#333",
        )  # fmt: skip
    for group in groups:
        for name, share in group.current.items():
            if share > 0:
                axes.text(
                    share + widest * 0.01, current_y[name], _percent(share),
                    va="center", fontsize="x-small", color="#8a4a1c",
                )  # fmt: skip
    axes.set_yticks(range(len(order)), order)
    axes.set_ylim(len(order) - 0.5, -0.5)  # first category on top
    axes.set_xlim(0, min(1.0, widest * 1.15) or 1.0)
    axes.set_xlabel("share of rows")
    handles = [
        patches.Patch(color=REFERENCE_COLOR, label="reference"),
        patches.Patch(color=CURRENT_COLOR, label="current (this window)"),
    ]
    if any(group.pooled for group in groups):
        handles += [
            patches.Patch(
                facecolor=REFERENCE_COLOR, alpha=0.3, hatch="//", edgecolor=REFERENCE_COLOR,
                label="reference, pooled group",
            ),
            patches.Patch(color=POOLED_SHADE, label="tested as one category"),
        ]  # fmt: skip
    return handles


def _chart(reference: DriftReference, feature: FeatureDrift, rows: np.ndarray) -> str:
    """One PNG of reference vs current for the feature, base64-encoded; `rows` as received."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    column = feature.column
    if feature.categorical:
        categories = len(reference.category_map[column])
        size = (6.4, 1.6 + 0.32 * categories)
    else:
        size = (6.4, 3.4)
    # Constrained layout makes room for the title, the brackets and the legend below.
    figure, axes = plt.subplots(figsize=size, dpi=100, layout="constrained")
    try:
        marker = "DRIFT" if feature.drifted else "no drift"
        axes.set_title(
            f"{feature.name}: {_p_equals(feature.p_value)} ({marker})",
            color="#b00020" if feature.drifted else "black",
        )
        if feature.categorical:
            handles = _categorical_chart(axes, category_groups(reference, column, rows))
            figure.legend(handles=handles, loc="outside lower center", ncol=2, fontsize="small")
        else:
            ref = reference.x_ref[:, column]
            cur = rows[:, column]
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
            axes.legend(loc="best", fontsize="small")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 70em;
       color: #222; }
.verdict { padding: 0.8em 1.2em; border-radius: 6px; font-size: 1.2em; }
.verdict.drift { background: #fde2e4; border: 1px solid #b00020; }
.verdict.none { background: #e3f4e8; border: 1px solid #2e7d32; }
table { border-collapse: collapse; margin: 1em 0; max-width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left;
         overflow-wrap: anywhere; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.drifted td { color: #b00020; font-weight: 600; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(32em, 100%), 1fr));
          gap: 1em; }
figure { margin: 0; min-width: 0; }
figcaption { font-size: 0.85em; color: #555; overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; }
"""


def render_html(reference: DriftReference, window: TrafficWindow, result: DriftResult) -> str:
    """The report as one HTML document, charts embedded (no file or network needed to view it)."""
    e = html.escape
    verdict_class = "drift" if result.is_drift else "none"
    verdict = (
        f"<strong>Drift</strong> in {e(', '.join(result.drifted))}"
        if result.is_drift
        else "<strong>No drift</strong>: every feature's p-value is at or above the threshold"
    )
    drift_settings = reference.metadata.get("training", {}).get("drift", {})
    if window.first is not None and window.last is not None:
        plural = "" if window.requests == 1 else "s"
        span = f"{_iso(window.first)} to {_iso(window.last)}, {window.requests} request{plural}"
    else:
        span = "scenario file (no timestamps)"
    summary = [
        ("Traffic", _shown_path(window.source)),
        ("Window", f"{window.description}: {span}"),
        ("Rows tested", f"{result.rows:,} (one test over the whole window)"),
        (
            "Reference",
            f"{len(reference.x_ref):,} rows of {_shown_path(reference.folder)} "
            f"(created {reference.metadata.get('created', '?')})",
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
        f'<td class="number">{f.statistic:.4g}</td>'
        f'<td class="number">{e(format_p_value(f.p_value, 4))}</td>'
        f"<td>{'drift' if f.drifted else 'no'}</td></tr>"
        for f in result.features
    )
    figures = []
    for feature in result.features:
        caption = (
            f"{e(feature.name)}: {feature.test} statistic {feature.statistic:.4g}, "
            f"p-value {e(format_p_value(feature.p_value, 4))}"
        )
        if feature.categorical:
            caption += _pooling_note(reference, feature.column, window.rows)
        figures.append(
            f'<figure class="chart" data-feature="{e(feature.name)}">'
            f'<img alt="{e(feature.name)}: reference vs current" '
            f'src="data:image/png;base64,{_chart(reference, feature, window.rows)}">'
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
<p class="verdict {verdict_class}" id="verdict">{verdict} (threshold {result.threshold:.4g}).</p>
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
        features = json.loads((folder / METADATA_FILE).read_text())["input_features"]
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
