"""The `income-bundle` command: data, training, verification, serving and the demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from income_bundle.errors import BundleError
from income_bundle.paths import project_root

os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "2"
)  # keep TensorFlow start-up chatter out of the output

__all__ = ["main"]


def _cmd_data(args: argparse.Namespace) -> int:
    from income_bundle.data import data_fingerprint, ensure_raw_files

    directory = ensure_raw_files()
    print(f"Adult data verified in {directory} (data sha256 {data_fingerprint()})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from income_bundle.training import train

    report = train(force=args.force)
    print(report.table())
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
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


def _cmd_mlserver(args: argparse.Namespace) -> int:
    import signal
    import threading

    from income_bundle.server import MLServer
    from income_bundle.training import train

    train()
    server = MLServer(
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=0
    )
    with server:
        print(f"MLServer ready: REST {server.http_url}, gRPC {server.grpc_address}; Ctrl-C stops")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from income_bundle.seldon.local import ServeConfig, load_valid_bundle

    if args.kserve:
        return _validate_kserve(args.bundle or project_root() / "kserve", args.local_root)
    args.bundle = args.bundle or project_root() / "seldon-examples"
    config = ServeConfig(bundle_dir=args.bundle, local_root=args.local_root)
    bundle = load_valid_bundle(config)
    print(
        f"{args.bundle}: valid ({len(bundle.models)} models, {len(bundle.pipelines)} pipelines: "
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


def _cmd_serve(args: argparse.Namespace) -> int:
    from income_bundle.seldon.local import ServeSettings, serve

    settings = ServeSettings(_cli_settings_source=args.settings_source(parsed_args=args))
    if settings.local_root.resolve() == project_root().resolve():
        from income_bundle.training import train

        train()
    serve(settings)
    return 0


def _post_json(url: str, body: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _cmd_feedback(args: argparse.Namespace) -> int:
    import urllib.error

    url = f"{args.url.rstrip('/')}/v2/pipelines/{args.pipeline}/feedback"
    if args.file:
        entries = []
        for number, line in enumerate(Path(args.file).read_text().splitlines(), 1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as e:
                    print(f"error: {args.file}:{number}: not JSON: {e}", file=sys.stderr)
                    return 2
    elif args.id and args.truth:
        truth = [int(t) if t.isdigit() else t for t in args.truth.split(",")]
        entries = [{"id": args.id, "truth": truth}]
    else:
        print("error: give --id and --truth, or --file", file=sys.stderr)
        return 2
    failed = 0
    for entry in entries:
        try:
            status, body = _post_json(url, entry)
        except urllib.error.URLError as e:
            print(f"error: no monitor at {args.url} ({e.reason})", file=sys.stderr)
            return 1
        if status != 200:
            failed += 1
            print(f"error: {body.get('error', status)}", file=sys.stderr)
        else:
            print(json.dumps(body))
    return 1 if failed else 0


def _cmd_monitor(args: argparse.Namespace) -> int:
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
    with AlertReceiver(port=args.webhook_port, echo=True) as receiver:
        stack = MonitoringStack(
            gateway=args.gateway,
            mlserver_metrics=args.mlserver_metrics,
            monitor=args.monitor_metrics,
            webhook_url=receiver.url,
            prometheus_port=args.prometheus_port,
            alertmanager_port=args.alertmanager_port,
        )
        try:
            stack.start()
        except MonitoringStackError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        try:
            print(
                f"Prometheus {stack.prometheus_url} (scraping {args.gateway}, "
                f"{args.mlserver_metrics} and {args.monitor_metrics}, rules {stack.rules_file}), "
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


def _fetch_labelling(args: argparse.Namespace) -> int:
    query = [("format", _format_of(args.out))] + [("reason", r) for r in args.reason or []]
    body = _monitor_get(args.url, f"/v2/pipelines/{args.pipeline}/labelling", query)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(body)
    print(f"labelling dataset of {args.pipeline} from {args.url} written to {args.out}")
    return 0


def _cmd_labelling(args: argparse.Namespace) -> int:
    from income_bundle.monitoring.labelling import REASONS, write_rows
    from income_bundle.monitoring.service import Monitor, classifier_info, open_store
    from income_bundle.seldon.local import STORE_FILE

    if args.url:
        return _fetch_labelling(args)
    store = open_store(args.state_dir / STORE_FILE)
    try:
        monitor = Monitor(store, {args.pipeline: classifier_info(args.classifier)})
        columns, rows = monitor.labelling(args.pipeline, args.reason or REASONS)
    finally:
        store.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(write_rows(rows, columns, _format_of(args.out)))
    print(f"{len(rows)} rows written to {args.out}")
    return 0


def _read_rows(args: argparse.Namespace):
    import numpy as np

    from income_bundle.scenarios import load_scenario

    if args.file:
        body = json.loads(Path(args.file).read_text())
        tensor = body["inputs"][0]
        return np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
    return load_scenario(args.scenario).X[: args.rows]


def _cmd_infer(args: argparse.Namespace) -> int:
    from income_bundle.client import V2Client, V2Error

    address = args.grpc if args.protocol == "grpc" else args.url
    client = V2Client(address, args.protocol, headers={"seldon-model": args.target})
    try:
        outputs = client.infer("model", _read_rows(args))
    except V2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({name: value.tolist() for name, value in outputs.items()}, default=str))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"http://{args.url}/inspect/{urllib.parse.quote(args.reference)}?wait={args.wait}"
    try:
        with urllib.request.urlopen(url, timeout=args.wait + 30) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as e:
        print(f"error: {json.loads(e.read()).get('error')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as e:
        print(
            f"error: no gateway at {args.url} ({e.reason}); start one with 'income-bundle serve'",
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


def _cmd_report(args: argparse.Namespace) -> int:
    from income_bundle.monitoring.report import parse_time, write_report

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    traffic, fetched = args.traffic, None
    if str(traffic).startswith(("http://", "https://")) or str(traffic).endswith(".sqlite"):
        pipeline = args.pipeline or "income-production"
        traffic = fetched = _monitor_traffic(str(traffic), pipeline, since, until)
    try:
        result = write_report(
            traffic,
            args.output,
            since=since,
            until=until,
            last_rows=args.last_rows,
            pipeline=args.pipeline,
            detector=args.detector,
        )
    finally:
        if fetched is not None:
            fetched.unlink()
    drifting = f" in {', '.join(result.drifted)}" if result.drifted else ""
    print(
        f"wrote {args.output}: {result.rows} rows, {result.verdict}{drifting} "
        f"(p-value threshold {result.threshold:.4g})"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from income_bundle.demo import run_demo

    run_demo(protocol=args.protocol, monitor=args.monitor)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="income-bundle",
        description="Monitored income-classifier serving: artifacts, MLServer, the local Seldon gateway.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="download and verify the UCI Adult data files")
    data.set_defaults(func=_cmd_data)

    train = commands.add_parser(
        "train", help="train and package the five model folders (reuses up-to-date ones)"
    )
    train.add_argument("--force", action="store_true", help="retrain even if up to date")
    train.set_defaults(func=_cmd_train)

    verify = commands.add_parser(
        "verify", help="check every model folder's file hashes and library versions"
    )
    verify.set_defaults(func=_cmd_verify)

    mlserver = commands.add_parser(
        "mlserver", help="serve the five models on one MLServer until Ctrl-C"
    )
    mlserver.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    mlserver.add_argument(
        "--http-port", type=int, default=8080, help="REST port (default: %(default)s)"
    )
    mlserver.add_argument(
        "--grpc-port", type=int, default=8081, help="gRPC port (default: %(default)s)"
    )
    mlserver.set_defaults(func=_cmd_mlserver)

    validate = commands.add_parser(
        "validate",
        help="check Seldon manifests (or with --kserve the KServe path's): CRD schemas, "
        "pipeline rules, selectors, artifacts and tensors",
    )
    validate.add_argument(
        "bundle", nargs="?", type=Path, help="default: seldon-examples/ (kserve/ with --kserve)"
    )
    validate.add_argument(
        "--kserve", action="store_true", help="check the kserve/ manifests instead"
    )
    validate.add_argument(
        "--local-root", type=Path, default=project_root(), help="what /mnt/income-bundle maps to"
    )
    validate.set_defaults(func=_cmd_validate)

    serve = commands.add_parser(
        "serve",
        help="serve the bundle's models on MLServer behind a seldon-mesh compatible gateway",
    )
    # The flags come from the settings' fields (pydantic-settings), with their descriptions.
    from pydantic_settings import CliSettingsSource

    from income_bundle.seldon.local import ServeSettings

    serve.set_defaults(settings_source=CliSettingsSource(ServeSettings, root_parser=serve))
    serve.set_defaults(func=_cmd_serve)

    feedback = commands.add_parser(
        "feedback", help="send true labels for a pipeline request (by its x-request-id)"
    )
    feedback.add_argument(
        "--url",
        default="http://127.0.0.1:9010",
        help="the monitor: 'income-bundle serve's, or a port-forwarded cluster monitor "
        "(default: %(default)s)",
    )
    feedback.add_argument("--pipeline", default="income-production")
    feedback.add_argument("--id", help="the request id (x-request-id of the response)")
    feedback.add_argument("--truth", help="one label per row, comma-separated: 0/1 or <=50K/>50K")
    feedback.add_argument(
        "--file", type=Path, help='JSON Lines of {"id": ..., "truth": [...]} instead'
    )
    feedback.set_defaults(func=_cmd_feedback)

    monitor = commands.add_parser(
        "monitor",
        help="Prometheus and Alertmanager (Debian packages) on loopback, watching 'serve'",
    )
    monitor.add_argument(
        "--gateway", default="127.0.0.1:9000", help="the gateway's host:port (default: %(default)s)"
    )
    monitor.add_argument(
        "--mlserver-metrics",
        default="127.0.0.1:9002",
        help="MLServer's metrics host:port (default: %(default)s)",
    )
    monitor.add_argument(
        "--monitor-metrics",
        default="127.0.0.1:9010",
        help="the income monitor's host:port (default: %(default)s)",
    )
    monitor.add_argument("--prometheus-port", type=int, default=9090)
    monitor.add_argument("--alertmanager-port", type=int, default=9093)
    monitor.add_argument(
        "--webhook-port", type=int, default=9095, help="where Alertmanager posts alerts"
    )
    monitor.set_defaults(func=_cmd_monitor)

    labelling = commands.add_parser(
        "labelling", help="export the labelling dataset (flagged and drifted traffic)"
    )
    labelling.add_argument(
        "--state-dir",
        type=Path,
        default=project_root() / "build" / "state",
        help="read the store 'income-bundle serve' keeps there (default: %(default)s)",
    )
    labelling.add_argument(
        "--classifier",
        type=Path,
        default=project_root() / "models" / "income",
        help="with --state-dir: the classifier's model folder (class names, features)",
    )
    labelling.add_argument(
        "--url",
        help="read it from the monitor at this URL (e.g. http://127.0.0.1:9010, or a "
        "port-forwarded cluster monitor) instead of the state dir",
    )
    labelling.add_argument(
        "--pipeline", default="income-production", help="the pipeline (%(default)s)"
    )
    labelling.add_argument(
        "--out", type=Path, required=True, help="a .csv, .jsonl or .parquet file"
    )
    labelling.add_argument(
        "--reason", action="append", choices=["outlier", "drift"], help="only these reasons"
    )
    labelling.set_defaults(func=_cmd_labelling)

    infer = commands.add_parser(
        "infer", help="call a model or '<pipeline>.pipeline' through the gateway"
    )
    infer.add_argument("target", help="a model name, or <pipeline>.pipeline")
    source = infer.add_mutually_exclusive_group()
    source.add_argument("--file", help="a V2 JSON request whose first input holds the rows")
    source.add_argument(
        "--scenario", default="reference", choices=("reference", "low-education", "outliers")
    )
    infer.add_argument(
        "--rows", type=int, default=20, help="rows of the scenario to send (default: %(default)s)"
    )
    infer.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    infer.add_argument(
        "--url", default="127.0.0.1:9000", help="gateway REST address (default: %(default)s)"
    )
    infer.add_argument(
        "--grpc", default="127.0.0.1:9001", help="gateway gRPC address (default: %(default)s)"
    )
    infer.set_defaults(func=_cmd_infer)

    inspect = commands.add_parser(
        "inspect",
        help="latest data of a pipeline step, e.g. income-production.income-drift.outputs.is_drift",
    )
    inspect.add_argument("reference", help="<pipeline>[.<step>].(inputs|outputs)[.<tensor>]")
    inspect.add_argument(
        "--wait",
        type=float,
        default=5.0,
        help="seconds to wait for queued asynchronous steps (default: %(default)s)",
    )
    inspect.add_argument(
        "--url", default="127.0.0.1:9000", help="gateway REST address (default: %(default)s)"
    )
    inspect.set_defaults(func=_cmd_inspect)

    report = commands.add_parser(
        "report",
        help="write a static HTML drift report: per-feature distributions, reference vs current, "
        "and p-values, for a window of traffic",
    )
    report.add_argument(
        "traffic",
        nargs="?",
        default=str(project_root() / "build" / "state" / "monitor.sqlite"),
        help="a running monitor's URL (http://127.0.0.1:9010, or a port-forwarded cluster "
        "monitor), a monitor's store file (.sqlite), a JSONL traffic log (one pipeline request "
        "a line) or a scenario .npz (default: build/state/monitor.sqlite, the store "
        "'income-bundle serve' keeps)",
    )
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        default=project_root() / "build" / "drift-report.html",
        help="HTML file to write (default: build/drift-report.html)",
    )
    report.add_argument(
        "--since", help="first request time: ISO-8601 (UTC unless it has an offset) or unix seconds"
    )
    report.add_argument("--until", help="end of the window (exclusive), same forms as --since")
    report.add_argument(
        "--last-rows", type=int, metavar="N", help="only the window's last N rows (after the times)"
    )
    report.add_argument(
        "--pipeline",
        help="only requests to this pipeline (a monitor or store: default income-production)",
    )
    report.add_argument(
        "--detector",
        type=Path,
        help="drift detector folder (default: detectors/income-drift)",
    )
    report.set_defaults(func=_cmd_report)

    demo = commands.add_parser(
        "demo", help="train if needed, serve, run the three income scenarios, print a table"
    )
    demo.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    demo.add_argument(
        "--monitor",
        action="store_true",
        help="also run Prometheus and Alertmanager (Debian packages) and print what they saw",
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
