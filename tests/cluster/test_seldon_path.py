"""The Seldon cluster path, run: how the roles and make reach the scheduler (through a
port-forward, with the seldon CLI), the preflight's Docker check and the seldon CLI's platform,
each with stand-ins for kubectl, seldon, docker and uname; and Seldon's simple test through the
local gateway. What the roles hand the charts and wait for is read in tests/unit/test_seldon_path.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.ansible_files import ANSIBLE, ROLES, role_defaults
from tests.support.paths import ROOT

# --- The cli deploy mode (defect: `status -w` ran 5 s, and nothing reached the scheduler) ------

# A stand-in for `kubectl port-forward`: there is no cluster here. It listens where the real one
# would, says so as kubectl does, and records how it was called.
STAND_IN_KUBECTL = """#!{python}
import json, os, signal, socket, sys
args = sys.argv[1:]
local = int(args[args.index("port-forward") + 2].split(":")[0])
listener = socket.create_server(("127.0.0.1", local))
with open({log!r}, "a") as log:
    log.write(json.dumps({{"tool": "kubectl", "args": args, "pid": os.getpid()}}) + "\\n")
print(f"Forwarding from 127.0.0.1:{{local}} -> 9004", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    listener.accept()[0].close()
"""
# A stand-in for the seldon CLI (it needs a scheduler): records each call; fails `fail_on`.
STAND_IN_SELDON = """#!{python}
import json, socket, sys
args = sys.argv[1:]
host, port = args[args.index("--scheduler-host") + 1].rsplit(":", 1)
socket.create_connection((host, int(port)), timeout=5).close()  # the forward is up
with open({log!r}, "a") as log:
    log.write(json.dumps({{"tool": "seldon", "args": args}}) + "\\n")
sys.exit(1 if args[:2] == {fail_on!r} else 0)
"""


def run_cli_mode(
    tmp_path: Path, fail_on: list[str] | None = None, *extra: str
) -> tuple[Any, list[dict], int]:
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    for name, text in (
        ("kubectl", STAND_IN_KUBECTL.format(python=sys.executable, log=str(log))),
        ("seldon", STAND_IN_SELDON.format(python=sys.executable, log=str(log), fail_on=fail_on)),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    python_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(python_bin / "ansible-playbook"), str(ROOT / "tests" / "ansible" / "cli_load.yaml"),
         "-e", f"income_pipeline_scheduler_host=127.0.0.1:{port}",
         "-e", f"income_pipeline_cli={bin_dir / 'seldon'}",
         "-e", f"income_pipeline_repo_root={tmp_path / 'repo'}",
         "-e", "income_pipeline_wait_timeout_s=321", *extra],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{python_bin}:{os.environ['PATH']}"},
    )  # fmt: skip
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls, port


def assert_port_closed(port: int) -> None:
    import socket

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_cli_mode_reaches_the_scheduler_through_a_port_forward_and_waits_long_enough(tmp_path):
    result, calls, port = run_cli_mode(
        tmp_path, None, "-e", '{"income_pipeline_triton_models": ["tfsimple1"]}'
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (forward,) = [c["args"] for c in calls if c["tool"] == "kubectl"]
    # The scheduler Service: seldon-scheduler, port 9004 (operator v2.10.2
    # controllers/reconcilers/seldon/service_reconciler.go: SchedulerName, DefaultSchedulerPort).
    assert forward == ["-n", "seldon-mesh", "port-forward", "svc/seldon-scheduler", f"{port}:9004",
                       "--address", "127.0.0.1"]  # fmt: skip
    seldon = [c["args"] for c in calls if c["tool"] == "seldon"]
    defaults = role_defaults("income_pipeline")
    loads = [a for a in seldon if a[1] == "load"]
    statuses = [a for a in seldon if a[1] == "status"]
    models = defaults["income_pipeline_models"] + ["tfsimple1"]
    files = [Path(a[a.index("-f") + 1]) for a in loads]
    assert [f.name for f in files] == [
        f"{m}.yaml" for m in models + defaults["income_pipeline_pipelines"]
    ]
    assert files[len(models) - 1] == ROLES / "income_pipeline" / "files" / "tfsimple1.yaml"
    assert [a[2] for a in statuses] == models + defaults["income_pipeline_pipelines"]
    for args in loads:
        assert "--force" in args
    for args in statuses:
        # --timeout-secs, or `status -w` gives up after its 5 s default (cmd/seldon/cli
        # pipeline_inspect.go flagTimeoutDefault; model_status.go, pipeline_status.go).
        assert args[args.index("--timeout-secs") + 1] == "321", args
        assert args[args.index("--wait") + 1] in {"ModelAvailable", "PipelineReady"}
    for args in seldon:
        assert args[args.index("--scheduler-host") + 1] == f"127.0.0.1:{port}"
    assert_port_closed(port)


def test_cli_mode_stops_the_port_forward_when_a_load_fails(tmp_path):
    result, calls, port = run_cli_mode(tmp_path, fail_on=["pipeline", "load"])
    assert result.returncode != 0
    assert "Stop the port-forward" in result.stdout
    assert any(c["tool"] == "kubectl" for c in calls)
    assert_port_closed(port)


# --- make inspect-cluster (defect: namespace `default`, scheduler at 0.0.0.0:9004) -------------


def stand_ins(tmp_path: Path) -> tuple[Path, Path]:
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    for name, text in (
        ("kubectl", STAND_IN_KUBECTL.format(python=sys.executable, log=str(log))),
        ("seldon", STAND_IN_SELDON.format(python=sys.executable, log=str(log), fail_on=None)),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir, log


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_inspect_cluster_reads_the_mesh_namespace_topics_through_the_forwarded_scheduler(tmp_path):
    import json
    import os
    import subprocess

    bin_dir, log = stand_ins(tmp_path)
    port = free_port()
    result = subprocess.run(
        ["make", "--no-print-directory", "inspect-cluster", f"SELDON_CLI={bin_dir / 'seldon'}",
         f"SCHEDULER_PORT={port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    (forward,) = [c["args"] for c in calls if c["tool"] == "kubectl"]
    assert forward[:5] == [
        "-n",
        "seldon-mesh",
        "port-forward",
        "svc/seldon-scheduler",
        f"{port}:9004",
    ]
    (inspect,) = [c["args"] for c in calls if c["tool"] == "seldon"]
    assert inspect[:3] == ["pipeline", "inspect", "income-production.income-drift.outputs.is_drift"]
    # cmd/seldon/cli/pipeline_inspect.go: --namespace defaults to POD_NAMESPACE or "default"
    # (pkg/cli/kafka.go DefaultNamespace) and names the topics seldon.<namespace>.model....
    assert inspect[inspect.index("--namespace") + 1] == "seldon-mesh"
    # The Kafka listener kind publishes (ecosystem role) and the forwarded scheduler, not the
    # CLI's defaults 0.0.0.0:9092 / 0.0.0.0:9004 (cmd/seldon/cli/flags.go).
    assert inspect[inspect.index("--kafka-broker") + 1] == "127.0.0.1:9092"
    assert inspect[inspect.index("--scheduler-host") + 1] == f"127.0.0.1:{port}"
    assert_port_closed(port)


# --- The preflight (defect: Docker's buildx plugin, which the image builds need, unchecked) ----

# A stand-in for the Docker CLI and daemon (no Docker Engine runs here): answers `version` as a
# running Engine does, and `buildx version` as Docker with or without the plugin does.
STAND_IN_DOCKER = """#!/bin/sh
case "$1" in
  version) echo '{{"Client":{{"Version":"27.3.1"}},"Server":{{"Version":"27.3.1"}}}}' ;;
  buildx) {buildx} ;;
  *) exit 1 ;;
esac
"""
WITH_BUILDX = "echo 'github.com/docker/buildx v0.17.1 257815a'"
WITHOUT_BUILDX = "echo 'docker: unknown command: docker buildx' >&2; exit 1"


def run_preflight(tmp_path: Path, buildx: str) -> Any:
    import os
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(STAND_IN_DOCKER.format(buildx=buildx))
    (bin_dir / "docker").chmod(0o755)
    python_bin = Path(sys.executable).parent
    return subprocess.run(
        [str(python_bin / "ansible-playbook"), "playbooks/preflight.yaml", "-e", '{"preflight_tools": ["docker"]}'],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{python_bin}:{os.environ['PATH']}"},
    )  # fmt: skip


def test_preflight_fails_early_without_buildx_saying_how_to_install_it(tmp_path):
    result = run_preflight(tmp_path, WITHOUT_BUILDX)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Preflight failed, nothing was changed" in output
    assert "docker has no buildx plugin" in output
    assert "apt-get install docker-buildx-plugin" in output


def test_preflight_passes_docker_with_buildx(tmp_path):
    result = run_preflight(tmp_path, WITH_BUILDX)
    assert result.returncode == 0, result.stdout[-3000:]


# --- The seldon CLI download (defect: linux-amd64 whatever the machine) ------------------------


def choose_cli(tmp_path: Path, uname: str, *extra: str) -> tuple[Any, str | None]:
    import os
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A stand-in for `uname` on other machines than this one.
    (bin_dir / "uname").write_text(f"#!/bin/sh\necho '{uname}'\n")
    (bin_dir / "uname").chmod(0o755)
    out = tmp_path / "cli-url"
    python_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(python_bin / "ansible-playbook"), str(ROOT / "tests" / "ansible" / "cli_platform.yaml"),
         "-e", f"out={out}", *extra],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{python_bin}:{os.environ['PATH']}"},
    )  # fmt: skip
    return result, out.read_text() if out.exists() else None


def test_cli_is_the_release_asset_on_linux_amd64(tmp_path):
    result, url = choose_cli(tmp_path, "Linux x86_64")
    assert result.returncode == 0, result.stdout[-3000:]
    # The one CLI asset of the v2.10.2 release (Makefile prep-artifacts, .github/workflows/
    # draft-release.yml uploads .release/*).
    assert (
        url
        == "https://github.com/SeldonIO/seldon-core/releases/download/v2.10.2/seldon-linux-amd64"
    )


@pytest.mark.parametrize("uname", ["Darwin arm64", "Linux aarch64", "Darwin x86_64"])
def test_cli_elsewhere_stops_early_saying_what_is_supported_and_how_to_build_it(tmp_path, uname):
    result, url = choose_cli(tmp_path, uname)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and url is None
    platform = uname.lower().replace(" ", "-")
    assert f"is released for linux-x86_64 only (seldon-linux-amd64), not for {platform}" in output
    assert "make build-seldon" in output and "seldon_core_cli_url=file://" in output


def test_cli_built_by_the_user_is_taken_on_any_platform(tmp_path):
    result, url = choose_cli(
        tmp_path, "Darwin arm64", "-e", "seldon_core_cli_url=file:///opt/seldon"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert url == "file:///opt/seldon"


def test_make_infer_runs_seldons_simple_test_before_the_income_scenarios(seldon, tmp_path):
    """`make infer-cluster` against the local gateway, which speaks what seldon-mesh speaks; a
    stand-in records the seldon CLI's call (its pipeline infer needs a cluster's scheduler)."""
    import os
    import subprocess
    import sys

    log = tmp_path / "seldon-calls"
    cli = tmp_path / "seldon"
    cli.write_text(
        f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:3]) + '\\n')\n"
    )
    cli.chmod(0o755)
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.deps-stamp", "infer-cluster",
         f"MESH={seldon.http_url.removeprefix('http://')}", f"SELDON_CLI={cli}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.index("== iris") < out.index("== tfsimple1") < out.index("== reference")
    assert '{"predict": [[0], [1], [2]]}' in out
    assert "tfsimple1 not served (it needs the Triton Server: make cluster deploy TRITON=1)" in out
    assert out.count('"predict"') >= 4 and "== outliers" in out
    assert log.read_text() == "pipeline infer\n"


# --- Tracing: off stays off, on points every component at the collector (make TRACING=) --------

SELDON_CHARTS = ("seldon-core-v2-setup", "seldon-core-v2-runtime")
# The Seldon components that run Seldon's own code (the Go scheduler and gateways read
# /mnt/tracing/tracing.json, the dataflow engine's Java agent the OTEL_* env): each must take the
# operator's seldon-tracing ConfigMap (envoy and hodometer carry no tracing).
TRACED_COMPONENTS = (
    "seldon-scheduler", "seldon-modelgateway", "seldon-pipelinegateway", "seldon-dataflow-engine",
)  # fmt: skip


def effective_tracing(runtime: dict, seldon_config: dict) -> dict:
    """The runtime's tracingConfig with the SeldonConfig's as defaults, as operator v2.10.2 does
    (runtime_reconciler.go: runtime.Spec.Config.AddDefaults(seldonConfig.Spec.Config);
    seldonconfig_types.go TracingConfig.addDefaults fills ratio, endpoint and protocol when empty,
    never disable)."""
    merged = {"disable": bool(runtime.get("disable"))}
    for key in ("otelExporterEndpoint", "otelExporterProtocol", "ratio"):
        merged[key] = runtime.get(key) or seldon_config.get(key)
    return merged


def tracing_config_map(tracing: dict) -> dict:
    """The seldon-tracing ConfigMap's OTEL keys the operator writes from it (v2.10.2
    controllers/reconcilers/seldon/configmap_reconciler.go getTracingConfigMap)."""
    return {
        "OTEL_JAVAAGENT_ENABLED": str(not tracing["disable"]).lower(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{tracing['otelExporterEndpoint']}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": tracing["otelExporterProtocol"],
    }


def _of_kind(docs: list[dict], kind: str, name: str | None = None) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def _env(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


@pytest.fixture(scope="module")
def seldon_tracing(rendered, tmp_path_factory) -> dict[str, dict[str, list[dict]]]:
    """backend -> {chart or template: rendered objects} with tracing_backend=<backend>."""
    from income_bundle_dev.upstream_checks import (
        chart_dir,
        find_helm,
        find_upstream_dir,
        helm_template,
    )
    from tests.cluster.test_upstream_charts import NODE_VERSION
    from tests.support.tracing import installs, render_template

    helm = find_helm()
    if helm is None:
        pytest.skip("helm not on PATH or in ~/.cache/income-bundle (.ci/run builds it)")
    upstream, work = find_upstream_dir(ROOT), tmp_path_factory.mktemp("seldon-tracing")
    objects = {}
    for backend in ("off", "jaeger", "signoz"):
        chosen = installs(rendered, backend, SELDON_CHARTS)
        objects[backend] = {
            install.chart: helm_template(
                helm, chart_dir(install, upstream, work), install, NODE_VERSION
            )
            for install in chosen
        }
        objects[backend]["installs"] = chosen
        objects[backend]["server.yaml"] = render_template("seldon_core", "server.yaml.j2", backend)
    return objects


@pytest.mark.parametrize("backend", ["jaeger", "signoz"])
def test_tracing_on_points_every_seldon_component_and_mlserver_at_the_collector(
    seldon_tracing, backend
):
    import json

    from tests.support.tracing import COLLECTOR_SERVICE, OTLP_GRPC_PORT

    endpoint = f"{COLLECTOR_SERVICE[backend]}.tracing:{OTLP_GRPC_PORT}"
    objects = seldon_tracing[backend]
    config = _of_kind(objects["seldon-core-v2-setup"], "SeldonConfig")
    assert config["spec"]["config"]["tracingConfig"] == {
        "disable": False, "otelExporterEndpoint": endpoint, "otelExporterProtocol": "grpc",
        "ratio": "1",
    }  # fmt: skip
    runtime = _of_kind(objects["seldon-core-v2-runtime"], "SeldonRuntime")
    tracing = effective_tracing(runtime["spec"]["config"]["tracingConfig"], config["spec"]["config"]["tracingConfig"])  # fmt: skip
    assert tracing == {
        "disable": False, "otelExporterEndpoint": endpoint, "otelExporterProtocol": "grpc",
        "ratio": "1",
    }  # fmt: skip
    # The dataflow engine's Java agent: on, exporting OTLP over gRPC to the same collector.
    assert tracing_config_map(tracing) == {
        "OTEL_JAVAAGENT_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{endpoint}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    components = {c["name"]: c for c in config["spec"]["components"]}
    for name in TRACED_COMPONENTS:
        assert "seldon-tracing" in json.dumps(components[name]), name
    # MLServer: the income Server's mlserver container (merged by name into the ServerConfig's,
    # env appended: operator common/patch_utils.go MergeContainers) names the collector.
    server = _of_kind(objects["server.yaml"], "Server")
    (mlserver,) = [c for c in server["spec"]["podSpec"]["containers"] if c["name"] == "mlserver"]
    assert _env(mlserver)["MLSERVER_TRACING_SERVER"] == endpoint
    server_config = _of_kind(objects["seldon-core-v2-setup"], "ServerConfig", "mlserver")
    (stock,) = [
        c for c in server_config["spec"]["podSpec"]["containers"] if c["name"] == "mlserver"
    ]
    assert "MLSERVER_TRACING_SERVER" not in _env(stock)  # why the Server sets it itself


def test_tracing_off_stays_off_and_renders_the_objects_of_before(seldon_tracing, tmp_path):
    import copy
    import dataclasses

    from income_bundle_dev.upstream_checks import (
        chart_dir,
        find_helm,
        find_upstream_dir,
        helm_template,
    )
    from tests.cluster.test_upstream_charts import NODE_VERSION

    objects = seldon_tracing["off"]
    config = _of_kind(objects["seldon-core-v2-setup"], "SeldonConfig")
    assert config["spec"]["config"]["tracingConfig"]["disable"] is True
    runtime = _of_kind(objects["seldon-core-v2-runtime"], "SeldonRuntime")
    tracing = effective_tracing(runtime["spec"]["config"]["tracingConfig"], config["spec"]["config"]["tracingConfig"])  # fmt: skip
    assert tracing["disable"] is True
    assert tracing_config_map(tracing)["OTEL_JAVAAGENT_ENABLED"] == "false"
    # No MLServer is handed an address: not the chart's default seldon-collector.seldon-mesh:4317.
    server_config = _of_kind(objects["seldon-core-v2-setup"], "ServerConfig", "mlserver")
    (agent,) = [c for c in server_config["spec"]["podSpec"]["containers"] if c["name"] == "agent"]
    assert _env(agent)["MLSERVER_TRACING_SERVER"] == ""
    server = _of_kind(objects["server.yaml"], "Server")
    for container in server["spec"]["podSpec"]["containers"]:
        assert "MLSERVER_TRACING_SERVER" not in _env(container)
    # The values the roles handed the charts before tracing could be turned on render the very
    # same objects.
    helm, upstream = find_helm(), find_upstream_dir(ROOT)
    for install in objects["installs"]:  # type: ignore[union-attr]
        values = copy.deepcopy(install.values)
        if install.chart == "seldon-core-v2-setup":
            values["opentelemetry"] = {"disable": True, "endpoint": ""}
        else:
            values["config"]["tracingConfig"] = {"disable": True}
        before = dataclasses.replace(install, values=values)
        assert (
            helm_template(helm, chart_dir(before, upstream, tmp_path), before, NODE_VERSION)
            == objects[install.chart]
        ), install.chart
