"""The `income-bundle` command: data, training, verification, serving and the demo."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from income_bundle.errors import BundleError

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from income_bundle.demo import run_demo

    run_demo(protocol=args.protocol)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="income-bundle",
        description="Monitored income-classifier serving: artifacts, MLServer, demo.",
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

    demo = commands.add_parser(
        "demo", help="train if needed, serve, run the three income scenarios, print a table"
    )
    demo.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
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
