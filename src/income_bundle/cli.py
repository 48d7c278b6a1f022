"""The `income-bundle` command: data, training, verification, serving and the demo.

Each subcommand's options are a settings model (income_bundle.settings_cli): flags, else
`INCOME_<COMMAND>_<FIELD>` environment variables, else the defaults shown by `--help`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import CliPositionalArg, SettingsConfigDict

from income_bundle import quiet
from income_bundle.errors import BundleError
from income_bundle.paths import project_root
from income_bundle.seldon.local import ServeSettings, default_state_dir
from income_bundle.settings_cli import (
    CommandParser,
    CommandSettings,
    NoOptions,
    add_command,
    command_parser,
    settings_of,
)

__all__ = [
    "DemoSettings",
    "FeedbackSettings",
    "InferSettings",
    "InspectSettings",
    "LabellingSettings",
    "MLServerSettings",
    "ReportSettings",
    "StackSettings",
    "TrainSettings",
    "ValidateSettings",
    "build_parser",
    "main",
]

GatewayProtocol = Literal["rest", "grpc"]
STATE_DIR = project_root() / "build" / "state"  # where `income-bundle serve` keeps its store


class TrainSettings(CommandSettings):
    """Options of `income-bundle train`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_TRAIN_")

    force: bool = Field(False, description="retrain even if up to date")


class MLServerSettings(CommandSettings):
    """Options of `income-bundle mlserver`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_MLSERVER_")

    host: str = Field("127.0.0.1", description="address to bind")
    http_port: int = Field(8080, ge=0, le=65535, description="REST port")
    grpc_port: int = Field(8081, ge=0, le=65535, description="gRPC port")


class ValidateSettings(CommandSettings):
    """Options of `income-bundle validate`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_VALIDATE_")

    bundle: CliPositionalArg[Path | None] = Field(
        None, description="the manifests' folder (null: seldon-examples/, kserve/ with --kserve)"
    )
    kserve: bool = Field(False, description="check the kserve/ manifests instead")
    local_root: Path = Field(project_root(), description="what /mnt/income-bundle maps to")


class FeedbackSettings(CommandSettings):
    """Options of `income-bundle feedback`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_FEEDBACK_")

    url: str = Field(
        "http://127.0.0.1:9010",
        description="the monitor: 'income-bundle serve's, or a port-forwarded cluster monitor",
    )
    pipeline: str = Field("income-production", description="the pipeline the request went to")
    id: str | None = Field(None, description="the request id (x-request-id of the response)")
    truth: str | None = Field(
        None, description="one label per row, comma-separated: 0/1 or <=50K/>50K"
    )
    file: Path | None = Field(
        None, description='JSON Lines of {"id": ..., "truth": [...]} instead of --id and --truth'
    )
    token: SecretStr | None = Field(
        None, description="the monitor's feedback token (default: read from --token-file)"
    )
    token_file: Path = Field(
        default_factory=lambda: default_state_dir() / "feedback-token",
        description="where 'income-bundle serve' wrote the token (a cluster's: see "
        "docs/monitoring.md)",
    )

    @model_validator(mode="after")
    def _labels_given(self) -> FeedbackSettings:
        if self.file is None and not (self.id and self.truth):
            raise ValueError("give --id and --truth, or --file")
        return self


class StackSettings(CommandSettings):
    """Options of `income-bundle monitor` (the Prometheus and Alertmanager stack)."""

    model_config = SettingsConfigDict(env_prefix="INCOME_STACK_")

    gateway: str = Field("127.0.0.1:9000", description="the gateway's host:port")
    mlserver_metrics: str = Field("127.0.0.1:9002", description="MLServer's metrics host:port")
    monitor_metrics: str = Field("127.0.0.1:9010", description="the income monitor's host:port")
    prometheus_port: int = Field(9090, ge=0, le=65535, description="Prometheus's port")
    alertmanager_port: int = Field(9093, ge=0, le=65535, description="Alertmanager's port")
    webhook_port: int = Field(9095, ge=0, le=65535, description="where Alertmanager posts alerts")


class LabellingSettings(CommandSettings):
    """Options of `income-bundle labelling`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_LABELLING_")

    out: Path = Field(description="a .csv, .jsonl or .parquet file")
    state_dir: Path = Field(
        STATE_DIR, description="read the store 'income-bundle serve' keeps there"
    )
    classifier: Path = Field(
        project_root() / "models" / "income",
        description="with --state-dir: the classifier's model folder (class names, features)",
    )
    url: str | None = Field(
        None,
        description="read it from the monitor at this URL (e.g. http://127.0.0.1:9010, or a "
        "port-forwarded cluster monitor) instead of the state dir",
    )
    pipeline: str = Field("income-production", description="the pipeline")
    reason: list[Literal["outlier", "drift"]] | None = Field(
        None, description="only these reasons (repeatable; null: both)"
    )


class InferSettings(CommandSettings):
    """Options of `income-bundle infer`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_INFER_")

    target: CliPositionalArg[str] = Field(description="a model name, or <pipeline>.pipeline")
    file: Path | None = Field(
        None,
        description="a V2 JSON request whose first input holds the rows, instead of --scenario",
    )
    scenario: Literal["reference", "low-education", "outliers"] = Field(
        "reference", description="the scenario whose rows to send"
    )
    rows: int = Field(20, ge=1, description="rows of the scenario to send")
    protocol: GatewayProtocol = Field("rest", description="call the gateway over REST or gRPC")
    url: str = Field("127.0.0.1:9000", description="gateway REST address")
    grpc: str = Field("127.0.0.1:9001", description="gateway gRPC address")

    @model_validator(mode="after")
    def _one_source_of_rows(self) -> InferSettings:
        if self.file is not None and "scenario" in self.model_fields_set:
            raise ValueError("give --file or --scenario, not both")
        return self


class InspectSettings(CommandSettings):
    """Options of `income-bundle inspect`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_INSPECT_")

    reference: CliPositionalArg[str] = Field(
        description="<pipeline>[.<step>].(inputs|outputs)[.<tensor>]"
    )
    wait: float = Field(5.0, ge=0, description="seconds to wait for queued asynchronous steps")
    url: str = Field("127.0.0.1:9000", description="gateway REST address")


class ReportSettings(CommandSettings):
    """Options of `income-bundle report`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_REPORT_", cli_shortcuts={"output": "o"})

    traffic: CliPositionalArg[str] = Field(
        str(STATE_DIR / "monitor.sqlite"),
        description="a running monitor's URL (http://127.0.0.1:9010, or a port-forwarded cluster "
        "monitor), a monitor's store file (.sqlite), a JSONL traffic log (one pipeline request "
        "a line) or a scenario .npz; the default is the store 'income-bundle serve' keeps",
    )
    output: Path = Field(
        project_root() / "build" / "drift-report.html", description="HTML file to write"
    )
    since: str | None = Field(
        None,
        description="first request time: ISO-8601 (UTC unless it has an offset) or unix seconds",
    )
    until: str | None = Field(
        None, description="end of the window (exclusive), same forms as --since"
    )
    last_rows: int | None = Field(
        None, description="only the window's last N rows (after the times)"
    )
    pipeline: str | None = Field(
        None,
        description="only requests to this pipeline (null: every one in a traffic log, "
        "income-production from a monitor or a store)",
    )
    detector: Path | None = Field(
        None, description="drift detector folder (null: detectors/income-drift)"
    )


class DemoSettings(CommandSettings):
    """Options of `income-bundle demo`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_DEMO_")

    protocol: GatewayProtocol = Field("rest", description="call the gateway over REST or gRPC")
    monitor: bool = Field(
        False,
        description="also run Prometheus and Alertmanager (Debian packages) and print what they saw",
    )
    seldon: Literal["local", "real"] = Field(
        "local",
        description="the local gateway, or Seldon Core v2's own components built from source "
        "(real: a development rig, docs/seldon-local.md)",
    )
    tracing: bool = Field(
        False,
        description="also run Jaeger v2 (a development rig built with Go), trace every request "
        "to it and print the trace of one flagged request",
    )


def _cmd_data(settings: NoOptions) -> int:
    from income_bundle.data import data_fingerprint, ensure_raw_files

    directory = ensure_raw_files()
    print(f"Adult data verified in {directory} (data sha256 {data_fingerprint()})")
    return 0


def _cmd_train(settings: TrainSettings) -> int:
    from income_bundle.training import train

    report = train(force=settings.force)
    print(report.table())
    return 0


def _cmd_verify(settings: NoOptions) -> int:
    from income_bundle.artifacts import verify
    from income_bundle.paths import ARTIFACT_FOLDERS

    failed = 0
    for name in ARTIFACT_FOLDERS:
        try:
            verify(name)
            print(f"ok      {name}")
        except BundleError as e:
            failed += 1
            print(f"FAILED  {name}: {e}")
    return 1 if failed else 0


def _cmd_mlserver(settings: MLServerSettings) -> int:
    import signal
    import threading

    from income_bundle.server import MLServer
    from income_bundle.training import train

    train()
    server = MLServer(
        host=settings.host,
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        metrics_port=0,
    )
    with server:
        print(f"MLServer ready: REST {server.http_url}, gRPC {server.grpc_address}; Ctrl-C stops")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _cmd_validate(settings: ValidateSettings) -> int:
    from income_bundle.seldon.local import load_valid_bundle

    if settings.kserve:
        return _validate_kserve(settings.bundle or project_root() / "kserve", settings.local_root)
    directory = settings.bundle or project_root() / "seldon-examples"
    bundle = load_valid_bundle(ServeSettings(bundle_dir=directory, local_root=settings.local_root))
    print(
        f"{directory}: valid ({len(bundle.models)} models, {len(bundle.pipelines)} pipelines: "
        f"{', '.join(sorted(bundle.pipelines))})"
    )
    return 0


def _validate_kserve(directory: Path, local_root: Path) -> int:
    from income_bundle.rigs import import_rig

    kserve_manifest_problems = import_rig(
        "upstream_checks", "validate --kserve"
    ).kserve_manifest_problems
    problems = kserve_manifest_problems(directory, local_root)
    if problems:
        print(f"error: {directory} is not valid:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{directory}: valid")
    return 0


def _cmd_serve(settings: ServeSettings) -> int:
    from income_bundle.seldon.local import serve

    if settings.local_root.resolve() == project_root().resolve():
        from income_bundle.training import train

        train()
    serve(settings)
    return 0


def _post_json(url: str, body: dict, token: str) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _cmd_feedback(settings: FeedbackSettings) -> int:
    import urllib.error

    url = f"{settings.url.rstrip('/')}/v2/pipelines/{settings.pipeline}/feedback"
    if settings.token is not None:
        token = settings.token.get_secret_value()
    else:
        try:
            token = settings.token_file.read_text().strip()
        except OSError as e:
            print(
                f"error: no feedback token at {settings.token_file} ({e.strerror}); give "
                "--token-file or --token (INCOME_FEEDBACK_TOKEN)",
                file=sys.stderr,
            )
            return 2
    if settings.file:
        entries = []
        for number, line in enumerate(settings.file.read_text().splitlines(), 1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as e:
                    print(f"error: {settings.file}:{number}: not JSON: {e}", file=sys.stderr)
                    return 2
    else:  # without --file, FeedbackSettings holds both --id and --truth
        truth = [int(t) if t.isdigit() else t for t in settings.truth.split(",")]
        entries = [{"id": settings.id, "truth": truth}]
    failed = 0
    for entry in entries:
        try:
            status, body = _post_json(url, entry, token)
        except urllib.error.URLError as e:
            print(f"error: no monitor at {settings.url} ({e.reason})", file=sys.stderr)
            return 1
        if status != 200:
            failed += 1
            print(f"error: {body.get('error', status)}", file=sys.stderr)
        else:
            print(json.dumps(body))
    return 1 if failed else 0


def _cmd_monitor(settings: StackSettings) -> int:
    import signal
    import threading

    from income_bundle.rigs import import_rig

    rig = import_rig("monitoring_stack", "income-bundle monitor")
    AlertReceiver, MonitoringStack = rig.AlertReceiver, rig.MonitoringStack
    MonitoringStackError = rig.MonitoringStackError

    problem = rig.missing_binaries()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with AlertReceiver(port=settings.webhook_port, echo=True) as receiver:
        stack = MonitoringStack(
            gateway=settings.gateway,
            mlserver_metrics=settings.mlserver_metrics,
            monitor=settings.monitor_metrics,
            webhook_url=receiver.url,
            prometheus_port=settings.prometheus_port,
            alertmanager_port=settings.alertmanager_port,
        )
        try:
            stack.start()
        except MonitoringStackError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        try:
            print(
                f"Prometheus {stack.prometheus_url} (scraping {settings.gateway}, "
                f"{settings.mlserver_metrics} and {settings.monitor_metrics}, "
                f"rules {stack.rules_file}), "
                "Alertmanager "
                f"{stack.alertmanager_url}; alerts are printed here. Ctrl-C stops.",
                flush=True,
            )
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            stack.stop()
    return 0


def _monitor_get(url: str, path: str, query: list[tuple[str, str]]) -> bytes:
    """GET one of a running monitor's exports (local, or port-forwarded from a cluster)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    address = f"{url.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(address, timeout=120) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        message = json.loads(e.read() or b"{}").get("error", e.reason)
        raise BundleError(f"the monitor at {url} answered {e.code}: {message}") from e
    except urllib.error.URLError as e:
        raise BundleError(f"no monitor at {url} ({e.reason})") from e


def _format_of(out: Path) -> str:
    """The labelling export's format, from the file's suffix (CSV unless .jsonl or .parquet)."""
    return out.suffix.lstrip(".") if out.suffix in (".jsonl", ".parquet") else "csv"


def _fetch_labelling(settings: LabellingSettings, url: str) -> int:
    out = settings.out
    query = [("format", _format_of(out))] + [("reason", r) for r in settings.reason or []]
    body = _monitor_get(url, f"/v2/pipelines/{settings.pipeline}/labelling", query)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(body)
    print(f"labelling dataset of {settings.pipeline} from {url} written to {out}")
    return 0


def _cmd_labelling(settings: LabellingSettings) -> int:
    from income_bundle.monitoring.labelling import REASONS, write_rows
    from income_bundle.monitoring.service import Monitor, classifier_info, open_store
    from income_bundle.seldon.local import STORE_FILE

    if settings.url:
        return _fetch_labelling(settings, settings.url)
    store = open_store(settings.state_dir / STORE_FILE)
    try:
        monitor = Monitor(store, {settings.pipeline: classifier_info(settings.classifier)})
        columns, rows = monitor.labelling(settings.pipeline, settings.reason or REASONS)
    finally:
        store.close()
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_bytes(write_rows(rows, columns, _format_of(settings.out)))
    print(f"{len(rows)} rows written to {settings.out}")
    return 0


def _read_rows(settings: InferSettings):
    import numpy as np

    from income_bundle.scenarios import load_scenario

    if settings.file:
        body = json.loads(settings.file.read_text())
        tensor = body["inputs"][0]
        return np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
    return load_scenario(settings.scenario).X[: settings.rows]


def _cmd_infer(settings: InferSettings) -> int:
    from income_bundle.client import V2Client, V2Error

    address = settings.grpc if settings.protocol == "grpc" else settings.url
    client = V2Client(address, settings.protocol, headers={"seldon-model": settings.target})
    try:
        outputs = client.infer("model", _read_rows(settings))
    except V2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({name: value.tolist() for name, value in outputs.items()}, default=str))
    return 0


def _cmd_inspect(settings: InspectSettings) -> int:
    import urllib.error
    import urllib.parse
    import urllib.request

    reference = urllib.parse.quote(settings.reference)
    url = f"http://{settings.url}/inspect/{reference}?wait={settings.wait}"
    try:
        with urllib.request.urlopen(url, timeout=settings.wait + 30) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as e:
        print(f"error: {json.loads(e.read()).get('error')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as e:
        print(
            f"error: no gateway at {settings.url} ({e.reason}); "
            "start one with 'income-bundle serve'",
            file=sys.stderr,
        )
        return 1
    if body.get("error"):
        print(f"{body['reference']}: last run failed: {body['error']}")
        return 1
    for tensor in body["tensors"]:
        print(
            json.dumps(
                {
                    "name": tensor["name"],
                    "datatype": tensor["datatype"],
                    "shape": tensor["shape"],
                    "data": tensor["data"],
                }
            )
        )
    if not body["tensors"]:
        print(f"{body['reference']}: no data yet")
    return 0


def _monitor_traffic(source: str, pipeline: str, since: float | None, until: float | None) -> Path:
    """The window of a pipeline's traffic from a running monitor (a URL) or a monitor's store
    file, saved as a JSONL traffic log."""
    import tempfile

    from income_bundle.monitoring.labelling import write_rows
    from income_bundle.monitoring.service import open_store, traffic_window

    if source.startswith(("http://", "https://")):
        bounds = [(k, repr(v)) for k, v in (("since", since), ("until", until)) if v is not None]
        body = _monitor_get(source, f"/v2/pipelines/{pipeline}/traffic", bounds)
    else:
        store = open_store(Path(source))
        try:
            body = write_rows(traffic_window(store, pipeline, since, until), [], "jsonl")
        finally:
            store.close()
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as saved:
        saved.write(body)
    return Path(saved.name)


def _cmd_report(settings: ReportSettings) -> int:
    from income_bundle.monitoring.report import parse_time, write_report

    since = parse_time(settings.since) if settings.since else None
    until = parse_time(settings.until) if settings.until else None
    traffic: str | Path = settings.traffic
    fetched = None
    if settings.traffic.startswith(("http://", "https://")) or settings.traffic.endswith(".sqlite"):
        pipeline = settings.pipeline or "income-production"
        traffic = fetched = _monitor_traffic(settings.traffic, pipeline, since, until)
    try:
        result = write_report(
            traffic,
            settings.output,
            since=since,
            until=until,
            last_rows=settings.last_rows,
            pipeline=settings.pipeline,
            detector=settings.detector,
        )
    finally:
        if fetched is not None:
            fetched.unlink()
    drifting = f" in {', '.join(result.drifted)}" if result.drifted else ""
    print(
        f"wrote {settings.output}: {result.rows} rows, {result.verdict}{drifting} "
        f"(p-value threshold {result.threshold:.4g})"
    )
    return 0


def _cmd_demo(settings: DemoSettings) -> int:
    from income_bundle.demo import run_demo

    run_demo(
        protocol=settings.protocol,
        monitor=settings.monitor,
        seldon=settings.seldon,
        tracing=settings.tracing,
    )
    return 0


def build_parser() -> CommandParser:
    parser = command_parser(
        "income-bundle",
        "Monitored income-classifier serving: artifacts, MLServer, the local Seldon gateway.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command(
        commands, "data", NoOptions, _cmd_data, help="download and verify the UCI Adult data files"
    )
    add_command(
        commands,
        "train",
        TrainSettings,
        _cmd_train,
        help="train and package the five model folders (reuses up-to-date ones)",
    )
    add_command(
        commands,
        "verify",
        NoOptions,
        _cmd_verify,
        help="check every model folder's file hashes and library versions",
    )
    add_command(
        commands,
        "mlserver",
        MLServerSettings,
        _cmd_mlserver,
        help="serve the five models on one MLServer until Ctrl-C",
    )
    add_command(
        commands,
        "validate",
        ValidateSettings,
        _cmd_validate,
        help="check Seldon manifests (or with --kserve the KServe path's): CRD schemas, "
        "pipeline rules, selectors, artifacts and tensors",
    )
    add_command(
        commands,
        "serve",
        ServeSettings,
        _cmd_serve,
        help="serve the bundle's models on MLServer behind a seldon-mesh compatible gateway",
    )
    add_command(
        commands,
        "feedback",
        FeedbackSettings,
        _cmd_feedback,
        help="send true labels for a pipeline request (by its x-request-id)",
    )
    add_command(
        commands,
        "monitor",
        StackSettings,
        _cmd_monitor,
        help="Prometheus and Alertmanager (Debian packages) on loopback, watching 'serve'",
    )
    add_command(
        commands,
        "labelling",
        LabellingSettings,
        _cmd_labelling,
        help="export the labelling dataset (flagged and drifted traffic)",
    )
    add_command(
        commands,
        "infer",
        InferSettings,
        _cmd_infer,
        help="call a model or '<pipeline>.pipeline' through the gateway",
    )
    add_command(
        commands,
        "inspect",
        InspectSettings,
        _cmd_inspect,
        help="latest data of a pipeline step, e.g. income-production.income-drift.outputs.is_drift",
    )
    add_command(
        commands,
        "report",
        ReportSettings,
        _cmd_report,
        help="write a static HTML drift report: per-feature distributions, reference vs current, "
        "and p-values, for a window of traffic",
    )
    add_command(
        commands,
        "demo",
        DemoSettings,
        _cmd_demo,
        help="train if needed, serve, run the three income scenarios, print a table",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet.configure()  # before anything imports TensorFlow; LOG_LEVEL=debug keeps the frameworks' lines
    args = build_parser().parse_args(argv)
    settings = settings_of(args)
    try:
        return args.run(settings)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
