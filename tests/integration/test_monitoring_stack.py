"""End to end with the real monitoring stack: gateway + MLServer scraped by Prometheus (Debian
package) with the repo's rules, alerts routed by Alertmanager to a webhook this test runs.

Reference traffic raises nothing; low-education traffic raises IncomeFeatureDrift naming the
drifting features; outlier traffic raises IncomeOutlierRateHigh. Afterwards every dashboard
panel's query returns data.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from income_bundle.monitoring.dashboard import build_dashboard, dashboard_queries
from income_bundle_dev.monitoring_stack import AlertReceiver, MonitoringStack, missing_binaries

pytestmark = pytest.mark.skipif(missing_binaries() is not None, reason=str(missing_binaries()))

PIPELINE = "income-production"
SCRAPE = "2s"
ALERT_TIMEOUT_S = 150  # the rules wait 30 s; the 5-minute ratios need some runs first
TARGETS = {"income-gateway": True, "income-mlserver": True, "income-monitor": True}


class Traffic:
    """Two client threads sending 20-row pipeline requests of the current scenario, the same rows
    to the classifier alone, and true labels for every pipeline request as feedback."""

    def __init__(self, seldon, scenario):
        self.seldon = seldon
        self.scenario = scenario
        self.current = "reference"
        self.sent: dict[str, int] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(2)]
        self._ids = itertools.count()

    def _post(
        self, path: str, body: dict, headers: dict | None = None, url: str | None = None
    ) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{url or self.seldon.http_url}{path}",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def _run(self, seed: int) -> None:
        try:
            self._send(seed)
        except Exception as error:  # a dead sender must fail the test, not starve its alerts
            self.errors.append(f"sender {seed} died: {error!r}")

    def _send(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self._stop.is_set():
            name = self.current
            data = self.scenario[name]
            rows = rng.choice(len(data.X), 20, replace=False)
            body = {
                "inputs": [
                    {"name": "predict", "datatype": "FP32", "shape": [20, 12],
                     "data": data.X[rows].ravel().tolist()}
                ]
            }  # fmt: skip
            # The client names its request (a pipeline's REST answer has no body id, as
            # Seldon's), and sends its labels by that name.
            request_id = f"traffic-{seed}-{next(self._ids)}"
            status, answer = self._post(
                f"/v2/models/{PIPELINE}/infer",
                body,
                {"seldon-model": f"{PIPELINE}.pipeline", "x-request-id": request_id},
            )
            if status != 200:
                self.errors.append(f"{status}: {answer}")
                continue
            self.sent[name] = self.sent.get(name, 0) + 1
            # The classifier on its own too, as clients of single models call it.
            status, answer_model = self._post(
                "/v2/models/income/infer", body, {"seldon-model": "income"}
            )
            if status != 200:
                self.errors.append(f"model {status}: {answer_model}")
            truth = {"id": request_id, "truth": data.y[rows].astype(int).tolist()}
            status, answer = self._post(
                f"/v2/pipelines/{PIPELINE}/feedback",
                truth,
                {"Authorization": f"Bearer {self.seldon.feedback_token}"},
                url=self.seldon.monitor_url,
            )
            if status != 200:
                self.errors.append(f"feedback {status}: {answer}")
            time.sleep(0.1)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@pytest.fixture(scope="module")
def watched(training_report, tmp_path_factory):
    """A gateway of its own, Prometheus and Alertmanager on free ports, and the webhook."""
    from income_bundle.seldon.local import LocalSeldon, ServeSettings

    state = tmp_path_factory.mktemp("watched-state")
    with (
        LocalSeldon(ServeSettings(state_dir=state)) as seldon,
        AlertReceiver() as receiver,
        MonitoringStack.on_free_ports(seldon, receiver.url, scrape_interval=SCRAPE) as stack,
    ):
        yield seldon, stack, receiver


def test_alerts_follow_the_traffic_and_the_dashboard_has_data(watched, scenario):
    seldon, stack, receiver = watched
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.targets_up() != TARGETS:
        time.sleep(1)
    assert stack.targets_up() == TARGETS

    with Traffic(seldon, scenario) as traffic:
        # Reference traffic for longer than any rule's 30 s wait: nothing pending, nothing sent.
        time.sleep(45)
        held = [a["labels"]["alertname"] for a in stack.prometheus_alerts()]
        assert held == [], f"alerts on reference traffic: {held}\n{stack.log_tail()}"
        assert stack.alertmanager_alerts() == []
        assert receiver.notifications == []

        traffic.current = "low-education"
        drift = stack.wait_for_alert("IncomeFeatureDrift", ALERT_TIMEOUT_S)
        assert drift, (
            f"no IncomeFeatureDrift within {ALERT_TIMEOUT_S} s (traffic errors: {traffic.errors}): "
            f"{stack.log_tail()}"
        )
        features = {a["labels"]["feature"] for a in drift}
        assert "Education" in features
        for alert in drift:
            assert alert["labels"]["model"] == "income-drift"
            assert alert["labels"]["severity"] == "warning"
            assert alert["labels"]["feature"] in alert["annotations"]["summary"]

        traffic.current = "outliers"
        outliers = stack.wait_for_alert("IncomeOutlierRateHigh", ALERT_TIMEOUT_S)
        assert outliers, f"no IncomeOutlierRateHigh within {ALERT_TIMEOUT_S} s"
        assert {a["labels"]["model"] for a in outliers} == {"income-outlier"}
    assert traffic.errors == []

    # The webhook got Alertmanager's payload: version 4, the receiver, firing alerts with labels.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not receiver.alerts("IncomeOutlierRateHigh"):
        time.sleep(0.5)
    payload = receiver.notifications[0]
    assert payload["version"] == "4" and payload["receiver"] == "income-webhook"
    assert payload["status"] == "firing"
    sent = receiver.alerts("IncomeFeatureDrift")
    assert "Education" in {a["labels"]["feature"] for a in sent}
    assert all(a["annotations"]["runbook"] for a in sent)
    assert receiver.alerts("IncomeOutlierRateHigh")
    assert receiver.problems == []
    # Nothing else fired: the service stayed healthy and fast.
    others = {a["labels"]["alertname"] for a in receiver.alerts()} - {
        "IncomeFeatureDrift",
        "IncomeOutlierRateHigh",
        "IncomeTargetDrift",  # low-education labels are a target shift too, if it had time
        "IncomeAccuracyDrop",
    }
    assert others == set()

    # Every dashboard panel's query runs and returns data after this traffic.
    empty = []
    for title, expr in dashboard_queries(build_dashboard(), interval="1m"):
        if not stack.query(expr):
            empty.append(f"{title}: {expr}")
    assert empty == [], "panels without data:\n" + "\n".join(empty)


def test_waiting_for_scrapes_returns_only_after_every_target_was_scraped(watched):
    """What the demo relies on to read Prometheus right after its last request."""
    _, stack, _ = watched
    since = time.time()
    stack.wait_for_scrapes_after(since)
    stamps = {i["metric"]["job"]: float(i["value"][1]) for i in stack.query("timestamp(up)")}
    assert set(stamps) == set(TARGETS)
    assert all(stamp > since for stamp in stamps.values()), stamps
