"""The Seldon cluster path against the Seldon Core v2.10.2 sources: what the roles hand the charts,
what they wait for, what they select, and how they reach the scheduler.

Upstream facts are constants with their source (SeldonIO/seldon-core at tag v2.10.2) beside them;
where the pinned charts are at hand (``../shared/upstream`` beside the checkout) the tests also
read the facts from them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import ROOT

ANSIBLE = ROOT / "ansible"
ROLES = ANSIBLE / "roles"
UPSTREAM = ROOT.parent / "shared" / "upstream"


def upstream_chart(name: str) -> Path:
    chart = UPSTREAM / "charts" / name
    if not chart.is_dir():
        pytest.skip(
            f"{chart} is missing: the pinned charts sit in ../shared/upstream beside the checkout"
        )
    return chart


def iter_tasks(tasks: list[dict]) -> Iterator[dict]:
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from iter_tasks(task.get(key, []))


def role_tasks(role: str, file: str = "main.yaml") -> list[dict]:
    return list(iter_tasks(yaml.safe_load((ROLES / role / "tasks" / file).read_text())))


def render(value: Any, variables: dict[str, Any]) -> Any:
    """A role's Jinja, rendered by Ansible's own templar with the role's defaults."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    def trust(item: Any) -> Any:
        if isinstance(item, str):
            return trust_as_template(item)
        if isinstance(item, dict):
            return {key: trust(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [trust(inner) for inner in item]
        return item

    variables = {"playbook_dir": str(ANSIBLE / "playbooks"), **trust(variables)}
    return Templar(loader=DataLoader(), variables=variables).template(trust(value))


def role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yaml").read_text())


def chart_values(release: str, **overrides: Any) -> dict[str, Any]:
    """The values the seldon_core role hands the Helm release `release`, rendered."""
    (task,) = [
        t["kubernetes.core.helm"]
        for t in role_tasks("seldon_core")
        if t.get("kubernetes.core.helm", {}).get("name") == release
    ]
    return render(task.get("values", {}), {**role_defaults("seldon_core"), **overrides})


def merged(base: dict, top: dict) -> dict:
    """Helm's merge of user values over a chart's values.yaml."""
    out = dict(base)
    for key, value in top.items():
        out[key] = (
            merged(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def has_path(values: dict, path: str) -> bool:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# --- The SeldonRuntime's Ready (defect: waited for a condition that could never be True) ------

# operator/apis/mlops/v1alpha1/seldonruntime_types.go: seldonRuntimeConditionSet is a living
# condition set of these six, so Ready is True only once each of them is.
RUNTIME_READY_NEEDS = {
    "SchedulerReady", "DataflowEngineReady", "ModelGatewayReady", "PipelineGatewayReady",
    "EnvoyReady", "HodometerReady",
}  # fmt: skip
# Same file, ConditionNameMap; seldonconfig_types.go names the components.
CONDITION_OF_COMPONENT = {
    "seldon-scheduler": "SchedulerReady",
    "seldon-envoy": "EnvoyReady",
    "seldon-dataflow-engine": "DataflowEngineReady",
    "seldon-modelgateway": "ModelGatewayReady",
    "seldon-pipelinegateway": "PipelineGatewayReady",
    "hodometer": "HodometerReady",
}
# k8s/helm-charts/seldon-core-v2-runtime/templates/seldon-runtime.yaml: values key -> the
# override (component) it sets. controllers/reconcilers/seldon/runtime_reconciler.go creates no
# reconciler for a disabled component, so its condition is never set; a component scaled to 0
# replicas is ready (deployment_reconciler.go GetConditions: ReadyReplicas >= Replicas).
RUNTIME_CHART_COMPONENTS = {
    "hodometer": "hodometer",
    "scheduler": "seldon-scheduler",
    "envoy": "seldon-envoy",
    "dataflow": "seldon-dataflow-engine",
    "modelgateway": "seldon-modelgateway",
    "pipelinegateway": "seldon-pipelinegateway",
}


def runtime_conditions_waited_for() -> set[str]:
    waits = [
        t["kubernetes.core.k8s_info"]
        for t in role_tasks("seldon_core")
        if t.get("kubernetes.core.k8s_info", {}).get("kind") == "SeldonRuntime"
    ]
    assert waits, "the seldon_core role no longer waits for the SeldonRuntime"
    waited = set()
    for wait in waits:
        assert wait["wait_condition"]["status"] == "True"
        condition = wait["wait_condition"]["type"]
        waited |= RUNTIME_READY_NEEDS if condition == "Ready" else {condition}
    return waited


def test_every_runtime_condition_waited_for_can_become_true():
    waited = runtime_conditions_waited_for()
    assert waited <= RUNTIME_READY_NEEDS
    values = merged(
        {key: {"disable": False, "replicas": 1} for key in RUNTIME_CHART_COMPONENTS},
        chart_values("seldon-core-v2-runtime"),
    )
    never_set = {
        CONDITION_OF_COMPONENT[component]
        for key, component in RUNTIME_CHART_COMPONENTS.items()
        if values[key]["disable"]
    }
    assert not never_set & waited, (
        f"the role disables the components behind {sorted(never_set & waited)} and then waits "
        "for them: a disabled component never sets its condition, so the wait can only time out"
    )


def test_hodometer_sends_nothing():
    assert chart_values("seldon-core-v2-runtime")["hodometer"]["replicas"] == 0


def test_runtime_chart_components_are_the_pinned_charts():
    template = (
        upstream_chart("seldon-core-v2-runtime-2.10.2") / "templates" / "seldon-runtime.yaml"
    ).read_text()
    # Each override is `- name: <component>` then `disable: {{ .Values.<key>.disable }}`.
    found = dict(
        (key, name)
        for name, key in re.findall(
            r"- name: (\S+)\n\s+disable: \{\{ \.Values\.(\w+)\.disable \}\}", template
        )
    )
    assert found == RUNTIME_CHART_COMPONENTS
    assert set(RUNTIME_CHART_COMPONENTS.values()) == set(CONDITION_OF_COMPONENT)


# --- Tracing (defect: `opentelemetry.enable` is no key of the chart, tracing stayed on) --------


def test_tracing_is_off_in_the_seldon_config_the_runtime_and_mlserver():
    setup = chart_values("seldon-core-v2-setup")
    runtime = chart_values("seldon-core-v2-runtime")
    # Setup chart: opentelemetry.disable -> SeldonConfig tracingConfig.disable; endpoint ->
    # MLSERVER_TRACING_SERVER of every server (templates/_components-*.tpl), which MLServer 1.7.1
    # uses whenever it is truthy (mlserver/rest/app.py, grpc/server.py: `if settings.tracing_server`).
    assert setup["opentelemetry"]["disable"] is True
    assert setup["opentelemetry"]["endpoint"] == ""
    # The runtime's own tracingConfig.disable reaches the seldon-tracing ConfigMap; addDefaults
    # does not take `disable` from the SeldonConfig (operator seldonconfig_types.go).
    assert runtime["config"]["tracingConfig"]["disable"] is True


def test_tracing_values_are_keys_of_the_pinned_charts():
    setup = yaml.safe_load(
        (upstream_chart("seldon-core-v2-setup-2.10.2") / "values.yaml").read_text()
    )
    runtime = yaml.safe_load(
        (upstream_chart("seldon-core-v2-runtime-2.10.2") / "values.yaml").read_text()
    )
    for key in chart_values("seldon-core-v2-setup")["opentelemetry"]:
        assert has_path(setup, f"opentelemetry.{key}"), (
            f"seldon-core-v2-setup has no opentelemetry.{key}"
        )
    assert has_path(runtime, "config.tracingConfig.disable")


# --- The stock servers (defect: replicas 0 under minReplicas 1, refused by the operator) -------


def validated_scaling(spec: dict) -> list[str]:
    """Problems operator v2.10.2 finds in a Server's replicas (internal/utils.go
    GetValidatedScalingSpec, called by controllers/mlops/server_controller.go, which then stops
    reconciling the Server with a terminal error)."""
    replicas, minimum, maximum = (spec.get(k) for k in ("replicas", "minReplicas", "maxReplicas"))
    if replicas is None and minimum is None and maximum is None:
        return []
    problems = []
    effective = 1
    if replicas is not None and replicas >= 0:
        effective = replicas
    elif minimum is not None and minimum > 0:
        effective = minimum
    low = minimum if minimum is not None and minimum > 0 else 0
    if low and effective < low:
        problems.append(f"replicas {effective} must be >= min replicas {low}")
    if maximum is not None and maximum > 0:
        if low > maximum:
            problems.append(f"min replicas {low} must be <= max replicas {maximum}")
        if effective > maximum:
            problems.append(f"replicas {effective} must be <= max replicas {maximum}")
    return problems


def test_scaling_rule_refuses_what_the_operator_refuses():
    assert validated_scaling({"replicas": 0, "minReplicas": 1, "maxReplicas": 1})
    assert validated_scaling({"replicas": 2, "minReplicas": 1, "maxReplicas": 1})
    assert not validated_scaling({"replicas": 0, "minReplicas": 0, "maxReplicas": 1})
    assert not validated_scaling({"replicas": 1, "minReplicas": 1, "maxReplicas": 1})


@pytest.mark.parametrize("triton", [False, True], ids=["triton-off", "triton-on"])
def test_stock_servers_are_servers_the_operator_accepts(triton):
    chart = yaml.safe_load(
        (upstream_chart("seldon-core-v2-servers-2.10.2") / "values.yaml").read_text()
    )
    values = merged(
        chart, chart_values("seldon-core-v2-servers", seldon_core_triton_enabled=triton)
    )
    # templates/_servers-*.tpl: each Server takes replicas, minReplicas, maxReplicas from its key.
    for server in ("mlserver", "triton"):
        spec = {key: values[server][key] for key in ("replicas", "minReplicas", "maxReplicas")}
        assert validated_scaling(spec) == [], (server, spec)
    assert values["mlserver"]["replicas"] == 0
    assert values["triton"]["replicas"] == (1 if triton else 0)


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


# --- Seldon's simple test on the cluster: iris on MLServer, tfsimple1 on Triton ----------------

TRITON_SAMPLES = ROLES / "income_pipeline" / "files"


def test_tfsimple1_is_seldons_sample_and_a_valid_model():
    from income_bundle.crds import CrdSchemas, find_crd_dir

    manifest = yaml.safe_load((TRITON_SAMPLES / "tfsimple1.yaml").read_text())
    assert manifest["metadata"]["name"] == "tfsimple1"
    # samples/models/tfsimple1.yaml at v2.10.2.
    assert manifest["spec"]["storageUri"] == "gs://seldon-models/triton/simple"
    assert manifest["spec"]["requirements"] == ["tensorflow"]
    crd_dir = find_crd_dir(ROOT)
    if crd_dir is None:
        pytest.skip("no CRD schemas: set CRD_DIR or put shared/crds beside the checkout")
    assert CrdSchemas.from_dir(crd_dir).errors(manifest) == []
    # docs-gb/kubernetes/resources/pipeline.md: two INT32 tensors INPUT0, INPUT1 of shape [1, 16].
    request = json.loads((TRITON_SAMPLES / "tfsimple1-request.json").read_text())
    assert [(t["name"], t["datatype"], t["shape"], len(t["data"])) for t in request["inputs"]] == [
        ("INPUT0", "INT32", [1, 16], 16),
        ("INPUT1", "INT32", [1, 16], 16),
    ]


def test_sample_models_need_what_their_server_offers():
    values = yaml.safe_load(
        (upstream_chart("seldon-core-v2-setup-2.10.2") / "values.yaml").read_text()
    )
    # SELDON_SERVER_CAPABILITIES of each ServerConfig (templates/_components-statefulsets.tpl).
    offers = {
        server: set(values["serverConfig"][server]["serverCapabilities"].split(","))
        for server in ("mlserver", "triton")
    }
    iris = yaml.safe_load((ROOT / "seldon-examples" / "models" / "iris.yaml").read_text())
    tfsimple1 = yaml.safe_load((TRITON_SAMPLES / "tfsimple1.yaml").read_text())
    assert set(iris["spec"]["requirements"]) <= offers["mlserver"]  # the income Server's config
    assert set(tfsimple1["spec"]["requirements"]) <= offers["triton"]
    assert not set(tfsimple1["spec"]["requirements"]) <= offers["mlserver"]


def test_every_triton_sample_the_role_offers_is_shipped():
    spec = yaml.safe_load((ROLES / "income_pipeline" / "meta" / "argument_specs.yaml").read_text())
    choices = spec["argument_specs"]["main"]["options"]["income_pipeline_triton_models"]["choices"]
    assert choices and all((TRITON_SAMPLES / f"{name}.yaml").is_file() for name in choices)


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
