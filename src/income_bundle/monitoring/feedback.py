"""Ground truth arriving after the fact: rolling accuracy, label mix and target drift.

Labels are keyed by the pipeline request id (the `x-request-id` Seldon answers with), one per
row of that request. The tracker keeps a rolling window of the newest labelled rows; from it come
the accuracy and the label distribution, and a chi-squared goodness-of-fit test of that
distribution against the one the classifier was validated on gives the target-drift p-value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from income_bundle.errors import ServingError

__all__ = ["FeedbackMetrics", "FeedbackTracker", "WindowStats", "parse_labels"]

DEFAULT_WINDOW_ROWS = 500
# Below this many labelled rows the window says too little to test (chi-squared needs a few
# expected rows per class).
MIN_TEST_ROWS = 50


@dataclass(frozen=True)
class WindowStats:
    rows: int
    accuracy: float | None
    label_shares: dict[str, float]
    target_drift_p_value: float | None


def parse_labels(where: str, truth: object, class_names: Sequence[str]) -> list[int]:
    """Class indices from a list of indices or class names; a 400 ServingError otherwise."""
    if not isinstance(truth, list) or not truth:
        raise ServingError(
            400, f"{where}: 'truth' must be a non-empty list with one label per row of the request"
        )
    labels = []
    for position, label in enumerate(truth):
        if isinstance(label, bool):
            label = int(label)
        if isinstance(label, int) and 0 <= label < len(class_names):
            labels.append(label)
        elif isinstance(label, str) and label in class_names:
            labels.append(class_names.index(label))
        else:
            choices = ", ".join([*map(str, range(len(class_names))), *class_names])
            raise ServingError(
                400, f"{where}: truth[{position}] is {label!r}; expected one of {choices}"
            )
    return labels


class FeedbackTracker:
    """Rolling window of (truth, prediction) rows for one pipeline's classifier."""

    def __init__(
        self,
        class_names: Sequence[str],
        reference_shares: Sequence[float],
        window_rows: int = DEFAULT_WINDOW_ROWS,
    ):
        if len(reference_shares) != len(class_names):
            raise ValueError("one reference share per class")
        self.class_names = list(class_names)
        self.reference_shares = np.asarray(reference_shares, dtype=float)
        self.window: deque[tuple[int, int]] = deque(maxlen=window_rows)

    def add(self, truth: Sequence[int], predicted: Sequence[int]) -> None:
        self.window.extend(zip(truth, predicted, strict=True))

    def stats(self) -> WindowStats:
        rows = len(self.window)
        if not rows:
            return WindowStats(0, None, {}, None)
        truth = np.fromiter((t for t, _ in self.window), dtype=np.int64, count=rows)
        predicted = np.fromiter((p for _, p in self.window), dtype=np.int64, count=rows)
        counts = np.bincount(truth, minlength=len(self.class_names))
        shares = {name: float(c / rows) for name, c in zip(self.class_names, counts, strict=True)}
        p_value = None
        if rows >= MIN_TEST_ROWS:
            from scipy.stats import chisquare

            expected = self.reference_shares * rows
            p_value = float(chisquare(counts, expected).pvalue)
        return WindowStats(rows, float(np.mean(truth == predicted)), shares, p_value)


class FeedbackMetrics:
    """The feedback series the alert rules and the dashboard read, by pipeline."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ["pipeline", *labels], registry=registry)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, ["pipeline", *labels], registry=registry)

        self.rows = counter("income_feedback_rows", "Rows labelled through feedback.")
        self.correct = counter(
            "income_feedback_correct", "Labelled rows the classifier had predicted right."
        )
        self.labels = counter(
            "income_feedback_labels", "Labels received through feedback, by class.", "class"
        )
        self.accuracy = gauge(
            "income_feedback_accuracy",
            "Accuracy over the newest labelled rows (see income_feedback_window_rows).",
        )
        self.window_rows = gauge(
            "income_feedback_window_rows", "Labelled rows in the rolling feedback window."
        )
        self.label_share = gauge(
            "income_feedback_label_share",
            "Share of each class among the labels in the rolling window.",
            "class",
        )
        self.target_p_value = gauge(
            "income_target_drift_p_value",
            "Chi-squared p-value of the window's label mix against the validation data's.",
        )

    def labelled(
        self, pipeline: str, labels: Sequence[int], correct: int, class_names: Sequence[str]
    ) -> None:
        self.rows.labels(pipeline).inc(len(labels))
        self.correct.labels(pipeline).inc(correct)
        for index in labels:
            self.labels.labels(pipeline, class_names[index]).inc()

    def publish(self, pipeline: str, stats: WindowStats) -> None:
        self.window_rows.labels(pipeline).set(stats.rows)
        if stats.accuracy is not None:
            self.accuracy.labels(pipeline).set(stats.accuracy)
        for name, share in stats.label_shares.items():
            self.label_share.labels(pipeline, name).set(share)
        if stats.target_drift_p_value is not None:
            self.target_p_value.labels(pipeline).set(stats.target_drift_p_value)
