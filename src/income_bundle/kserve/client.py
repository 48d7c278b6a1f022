"""Send the three scenarios to the cluster's `income` InferenceService through the ingress.

`python -m income_bundle.kserve infer --url http://127.0.0.1:8080 --host <isvc host>`: the ingress
(Kourier, port-forwarded) routes by the Host header, which is the InferenceService's URL host.
Standard library only, so it runs anywhere the checkout is.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from income_bundle.paths import scenario_dir
from income_bundle.scenarios import SCENARIOS

__all__ = ["InferError", "infer", "main"]

MODEL = "income"


class InferError(Exception):
    """The InferenceService did not answer a scenario with predictions."""


def infer(url: str, host: str, request: dict, timeout_s: float = 30.0) -> dict:
    """POST one V2 request to /v2/models/income/infer at `url`, routed by `host`."""
    call = urllib.request.Request(
        f"{url.rstrip('/')}/v2/models/{MODEL}/infer",
        data=json.dumps(request).encode(),
        headers={"Host": host, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(call, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        raise InferError(f"{url} (Host {host}) answered {e.code}: {detail}") from e
    except (urllib.error.URLError, OSError) as e:
        raise InferError(
            f"cannot reach {url} (Host {host}): {e}; is Kourier port-forwarded "
            f"('kubectl -n kourier-system port-forward svc/kourier 8080:80')?"
        ) from e


def _predictions(response: dict) -> list[int]:
    for output in response.get("outputs", []):
        if output.get("name") == "predict":
            return [int(v) for v in output["data"]]
    raise InferError(f"the response has no 'predict' output: {json.dumps(response)[:300]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m income_bundle.kserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("infer", help="send scenarios to the income InferenceService")
    command.add_argument("--url", default="http://127.0.0.1:8080", help="the ingress")
    command.add_argument("--host", required=True, help="the InferenceService's host")
    command.add_argument("--scenario", choices=SCENARIOS, action="append",
                         help="scenario to send (repeatable; default: all three)")  # fmt: skip
    command.add_argument("--data-dir", type=Path, default=None, help="scenario folder")
    args = parser.parse_args(argv)
    print(f"{'scenario':<15}{'rows':>5}{'>50K':>6}")
    for name in args.scenario or SCENARIOS:
        path = (args.data_dir or scenario_dir()) / f"{name}.json"
        try:
            request = json.loads(path.read_text())
            predictions = _predictions(infer(args.url, args.host, request))
        except FileNotFoundError:
            print(f"error: {path} is missing: run 'make artifacts'", file=sys.stderr)
            return 1
        except InferError as e:
            print(f"error: scenario {name}: {e}", file=sys.stderr)
            return 1
        print(f"{name:<15}{len(predictions):>5}{sum(predictions):>6}")
    return 0
