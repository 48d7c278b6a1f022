"""The real seldon CLI (v2.10.2, built from Seldon's source by `make seldon-core`) against the
local gateway: `-i N` counts answers by their `x-seldon-route`, `--sticky-session` sends back the
routes the last answer named (operator/pkg/cli/infer.go `updateSummary`, session.go).

The CLI keeps its session in `<home>/.config/seldon/cli/session`, the home read from the user
database (cgo's getpwuid, not $HOME); each call runs in a user and mount namespace with a
scratch folder mounted there, so the machine's own CLI session is never touched.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

SELDON_VERSION = "2.10.2"
ROWS = 2


def _cli() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "income-bundle" / f"seldon-core-v{SELDON_VERSION}" / "bin" / "seldon"


@pytest.fixture(scope="module")
def cli():
    binary = _cli()
    if not binary.is_file():
        pytest.skip(f"the seldon CLI is not built ({binary}): make seldon-core")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to give the CLI its own home")
    return binary


def run_cli(cli: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    """`seldon <args>` with `config` as its ~/.config."""
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    (home / ".config").mkdir(exist_ok=True)  # the mount point must exist; it stays empty here
    script = 'mount --bind "$0" "$1" && shift && exec "$@"'
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]
    command += [str(config), str(home / ".config"), str(cli), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def payload(scenario, mode: str = "rest") -> str:
    """A request as the CLI takes it: V2 JSON for REST, protobuf's JSON mapping for gRPC."""
    X = scenario["reference"].X[:ROWS]
    tensor = {"name": "predict", "datatype": "FP32", "shape": [ROWS, 12]}
    if mode == "grpc":
        tensor["contents"] = {"fp32_contents": X.ravel().tolist()}
    else:
        tensor["data"] = X.tolist()
    return json.dumps({"inputs": [tensor]})


@pytest.mark.parametrize("mode", ["rest", "grpc"])
def test_iterations_count_the_model_route(cli, seldon, scenario, tmp_path, mode):
    host = seldon.http_url.removeprefix("http://") if mode == "rest" else seldon.grpc_address
    common = ["--inference-host", host, "--inference-mode", mode]
    result = run_cli(
        cli, tmp_path, "model", "infer", "income", payload(scenario, mode), *common, "-i", "3"
    )
    assert result.returncode == 0, result.stderr
    assert "Success: map[:income_1::3]" in result.stdout, result.stdout
    assert "Errors" not in result.stdout


def test_sticky_session_sends_back_the_route_of_the_last_answer(cli, seldon, scenario, tmp_path):
    host = ["--inference-host", seldon.http_url.removeprefix("http://")]
    session = tmp_path / "seldon" / "cli" / "session"
    first = run_cli(cli, tmp_path, "model", "infer", "income", payload(scenario), *host)
    assert first.returncode == 0, first.stderr
    assert session.read_text() == ":income_1:"
    answer = json.loads(first.stdout)
    assert (answer["model_name"], answer["model_version"]) == ("income_1", "1")

    sticky = run_cli(
        cli, tmp_path, "model", "infer", "income", payload(scenario), *host,
        "--sticky-session", "--show-headers",
    )  # fmt: skip
    assert sticky.returncode == 0, sticky.stderr
    assert "> X-Seldon-Route:[:income_1:]" in sticky.stdout  # what the CLI sent
    assert "< X-Seldon-Route:[:income_1:]" in sticky.stdout  # what the gateway answered


def test_pipeline_iterations_count_each_route(cli, seldon, scenario, tmp_path):
    host = ["--inference-host", seldon.http_url.removeprefix("http://")]
    result = run_cli(
        cli, tmp_path, "pipeline", "infer", "income-production", payload(scenario), *host,
        "-i", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The routes of the output's later chain of steps (the outlier detector's, after the
    # preprocessor), then Envoy's for the pipeline; the CLI prints a Go map, keys sorted.
    routes = [":income-outlier_1:", ":income-preprocess_1:", ":income-production.pipeline:"]
    expected = "Success: map[" + " ".join(f"{r}:3" for r in routes) + "]"
    assert expected in result.stdout, result.stdout
    session = (tmp_path / "seldon" / "cli" / "session").read_text().split(",")
    assert sorted(session) == routes
