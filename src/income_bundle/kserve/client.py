"""Send the three scenarios to the cluster's `income` InferenceService through the ingress.

`python -m income_bundle.kserve infer --url http://127.0.0.1:8080 --host <isvc host>`: the ingress
(Kourier, port-forwarded) routes by the Host header, which is the InferenceService's URL host.
It sends the scenario requests `make artifacts` writes (data/scenarios/<scenario>.json).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.paths import scenario_dir
from income_bundle.scenarios import SCENARIOS
from income_bundle.settings_cli import CommandSettings, add_command, command_parser, settings_of

__all__ = ["InferError", "InferSettings", "infer", "main"]

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


class InferSettings(CommandSettings):
    """Options of `python -m income_bundle.kserve infer`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_KSERVE_INFER_")

    host: str = Field(description="the InferenceService's host")
    url: str = Field("http://127.0.0.1:8080", description="the ingress")
    scenario: list[Literal[SCENARIOS]] | None = Field(  # type: ignore[valid-type]
        None, description="scenario to send (repeatable; null: all three)"
    )
    data_dir: Path | None = Field(None, description="scenario folder (null: the checkout's)")


def _send_scenarios(settings: InferSettings) -> int:
    print(f"{'scenario':<15}{'rows':>5}{'>50K':>6}")
    for name in settings.scenario or SCENARIOS:
        path = (settings.data_dir or scenario_dir()) / f"{name}.json"
        try:
            request = json.loads(path.read_text())
            predictions = _predictions(infer(settings.url, settings.host, request))
        except FileNotFoundError:
            print(f"error: {path} is missing: run 'make artifacts'", file=sys.stderr)
            return 1
        except InferError as e:
            print(f"error: scenario {name}: {e}", file=sys.stderr)
            return 1
        print(f"{name:<15}{len(predictions):>5}{sum(predictions):>6}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("python -m income_bundle.kserve", __doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command(
        commands,
        "infer",
        InferSettings,
        _send_scenarios,
        help="send scenarios to the income InferenceService",
    )
    args = parser.parse_args(argv)
    return args.run(settings_of(args))
