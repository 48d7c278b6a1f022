"""Prometheus and Alertmanager on loopback, watching the local gateway and MLServer.

The Debian packages' binaries (`prometheus`, `prometheus-alertmanager`) run with their data in a
temporary directory, the repo's rules file unchanged, and Alertmanager routing every alert to a
webhook. `AlertReceiver` is such a webhook: it keeps what Alertmanager posts (and can print it).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from income_bundle.errors import BundleError
from income_bundle.paths import project_root
from income_bundle.process import ServerProcess, http_ok

__all__ = [
    "DEBIAN_PACKAGES",
    "AlertReceiver",
    "MonitoringStack",
    "MonitoringStackError",
    "missing_binaries",
    "rfc3339_seconds",
]

RULES_FILE = Path("monitoring") / "prometheus" / "income-rules.yaml"
# Binary -> the Debian package that ships it.
DEBIAN_PACKAGES = {"prometheus": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager"}


class MonitoringStackError(BundleError):
    """Prometheus or Alertmanager could not be started; the message says what to do."""


def rfc3339_seconds(stamp: str) -> float:
    """Unix seconds of a Prometheus time stamp (RFC 3339 with up to nanoseconds)."""
    found = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", stamp)
    if not found:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    whole, fraction, zone = found.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + float(fraction or 0)


def missing_binaries() -> str | None:
    """None when both binaries are on PATH, else a message naming the packages to install."""
    missing = [package for binary, package in DEBIAN_PACKAGES.items() if not shutil.which(binary)]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not found: install Debian's package(s) with "
        f"'apt-get install {' '.join(missing)}'"
    )


class AlertReceiver:
    """An Alertmanager webhook on 127.0.0.1: keeps every notification, optionally prints it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, echo: bool = False):
        self.notifications: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.echo = echo
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    payload = json.loads(self.rfile.read(length))
                except json.JSONDecodeError as e:
                    receiver.problems.append(f"not JSON: {e}")
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._receive(payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _receive(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self.notifications.append(payload)
        if self.echo:
            for alert in payload.get("alerts", []):
                labels = alert.get("labels", {})
                summary = alert.get("annotations", {}).get("summary", "")
                print(
                    f"[alert] {alert.get('status', '?'):8} {labels.get('alertname')} "
                    f"({labels.get('severity', '-')}): {summary}",
                    flush=True,
                )

    def alerts(self, name: str | None = None, status: str = "firing") -> list[dict[str, Any]]:
        with self._lock:
            return [
                alert
                for payload in self.notifications
                for alert in payload.get("alerts", [])
                if alert.get("status") == status
                and (name is None or alert.get("labels", {}).get("alertname") == name)
            ]

    def __enter__(self) -> AlertReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class MonitoringStack:
    """Prometheus scraping the gateway, MLServer and the monitor with the income rules, and
    Alertmanager."""

    gateway: str  # host:port of the gateway's /metrics
    mlserver_metrics: str  # host:port of MLServer's /metrics
    webhook_url: str
    monitor: str | None = None  # host:port of the monitor's /metrics (feedback, labelling)
    host: str = "127.0.0.1"
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    scrape_interval: str = "5s"
    rules_file: Path = field(default_factory=lambda: project_root() / RULES_FILE)
    ready_timeout_s: float = 60.0
    _processes: list[ServerProcess] = field(default_factory=list, init=False, repr=False)
    _workdir: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    @classmethod
    def on_free_ports(cls, seldon: Any, webhook_url: str, **settings: Any) -> MonitoringStack:
        """A stack watching a `LocalSeldon` (its gateway and MLServer metrics), on free ports."""
        from income_bundle.server import free_port

        return cls(
            gateway=seldon.http_url.removeprefix("http://"),
            mlserver_metrics=seldon.mlserver_metrics_url.removeprefix("http://").removesuffix(
                "/metrics"
            ),
            webhook_url=webhook_url,
            monitor=seldon.monitor_url.removeprefix("http://") if seldon.monitor_url else None,
            prometheus_port=free_port(),
            alertmanager_port=free_port(),
            **settings,
        )

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.host}:{self.alertmanager_port}"

    def start(self) -> MonitoringStack:
        problem = missing_binaries()
        if problem:
            raise MonitoringStackError(problem)
        self._workdir = tempfile.TemporaryDirectory(prefix="income-monitoring-")
        work = Path(self._workdir.name)
        (work / "prometheus.yml").write_text(yaml.safe_dump(self.prometheus_config()))
        (work / "alertmanager.yml").write_text(yaml.safe_dump(self.alertmanager_config()))
        try:
            alertmanager = ServerProcess(
                "Alertmanager",
                [
                    "prometheus-alertmanager",
                    f"--config.file={work / 'alertmanager.yml'}",
                    f"--storage.path={work / 'alertmanager'}",
                    f"--web.listen-address={self.host}:{self.alertmanager_port}",
                    "--cluster.listen-address=",  # one instance: no gossip port
                ],
                work / "alertmanager.log",
            )
            self._processes.append(alertmanager)
            alertmanager.wait_until(
                lambda: http_ok(f"{self.alertmanager_url}/-/ready"),
                self.ready_timeout_s,
                MonitoringStackError,
            )
            prometheus = ServerProcess(
                "Prometheus",
                [
                    "prometheus",
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'prometheus'}",
                    f"--web.listen-address={self.host}:{self.prometheus_port}",
                    # Keeps the trace ids the gateway's latency histograms carry (OpenMetrics
                    # exemplars), which the dashboard's latency panels link to the trace backend.
                    "--enable-feature=exemplar-storage",
                ],
                work / "prometheus.log",
            )
            self._processes.append(prometheus)
            prometheus.wait_until(
                lambda: http_ok(f"{self.prometheus_url}/-/ready"),
                self.ready_timeout_s,
                MonitoringStackError,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def prometheus_config(self) -> dict[str, Any]:
        scrape = [
            {"job_name": "income-gateway", "static_configs": [{"targets": [self.gateway]}]},
            {
                "job_name": "income-mlserver",
                "static_configs": [{"targets": [self.mlserver_metrics]}],
            },
        ]
        if self.monitor:
            scrape.append(
                {"job_name": "income-monitor", "static_configs": [{"targets": [self.monitor]}]}
            )
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": [str(self.rules_file.resolve())],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"{self.host}:{self.alertmanager_port}"]}]}
                ]
            },
            "scrape_configs": scrape,
        }

    def alertmanager_config(self) -> dict[str, Any]:
        return {
            "route": {
                "receiver": "income-webhook",
                # One notification per alert and what it is about (feature, model, pipeline).
                "group_by": ["alertname", "model", "feature", "pipeline"],
                "group_wait": "1s",
                "group_interval": "5s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "income-webhook",
                    "webhook_configs": [{"url": self.webhook_url, "send_resolved": True}],
                }
            ],
        }

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; raises MonitoringStackError with Prometheus' message on an error."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise MonitoringStackError(f"query {expr!r}: {body.get('error', body)}")
        return body["data"]["result"]

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        """Alerts Prometheus holds (pending or firing)."""
        with urllib.request.urlopen(f"{self.prometheus_url}/api/v1/alerts", timeout=10) as r:
            return json.loads(r.read())["data"]["alerts"]

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's alerts (API v2): the active ones, resolved ones dropped."""
        with urllib.request.urlopen(f"{self.alertmanager_url}/api/v2/alerts", timeout=10) as r:
            return json.loads(r.read())

    def rule_groups(self) -> list[dict[str, Any]]:
        """Prometheus' alerting rule groups as loaded: each rule's `duration` (its `for:`),
        labels, annotations, state and alerts, and each group's `lastEvaluation`."""
        url = f"{self.prometheus_url}/api/v1/rules?type=alert"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())["data"]["groups"]

    def wait_for_evaluation_after(self, since: float, timeout_s: float = 60.0) -> None:
        """Block until every target was scraped after `since` (Unix time) and every rule group
        evaluated after that, so the alerts Prometheus holds reflect what happened before
        `since`; raises MonitoringStackError on timeout."""
        started = time.monotonic()
        self.wait_for_scrapes_after(since, timeout_s)
        scraped = time.time()
        while True:
            groups = self.rule_groups()
            if groups and all(rfc3339_seconds(g["lastEvaluation"]) > scraped for g in groups):
                return
            if time.monotonic() - started > timeout_s:
                raise MonitoringStackError(
                    f"Prometheus did not evaluate its rules within {timeout_s:g} s"
                )
            time.sleep(0.2)

    def targets_up(self) -> dict[str, bool]:
        result = self.query("up")
        return {item["metric"]["job"]: item["value"][1] == "1" for item in result}

    def wait_for_scrapes_after(self, since: float, timeout_s: float = 60.0) -> None:
        """Block until every target has been scraped successfully after `since` (Unix time), so
        instant queries see what happened before it (a failed scrape, say one that timed out on
        a busy machine, does not count); raises MonitoringStackError on timeout."""
        jobs = [job["job_name"] for job in self.prometheus_config()["scrape_configs"]]
        deadline = time.monotonic() + timeout_s
        while True:
            # `up` is 1 for a scrape that succeeded, stamped with the scrape's time. timestamp()
            # takes the selector itself: of an expression it gives the query's time instead.
            stamps = {i["metric"]["job"]: float(i["value"][1]) for i in self.query("timestamp(up)")}
            ups = self.targets_up()
            if all(ups.get(job) and stamps.get(job, 0) > since for job in jobs):
                return
            if time.monotonic() > deadline:
                raise MonitoringStackError(f"no scrape of every target within {timeout_s:g} s")
            time.sleep(0.2)

    def wait_for_alert(self, name: str, timeout_s: float, poll_s: float = 1.0) -> list[dict]:
        """Alertmanager's active alerts of this name, once there are any (or [] on timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [a for a in self.alertmanager_alerts() if a["labels"].get("alertname") == name]
            if found:
                return found
            time.sleep(poll_s)
        return []

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(lines)}" for p in self._processes)

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        if self._workdir:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> MonitoringStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
