"""One set of metric names for every world: each alert rule and dashboard panel reads only series
that a component deployed in each world it is marked for exports, and is marked for every world
whose components export all it reads.

The worlds (named by the rules' `worlds` annotation and the panels' closing "Worlds: ..."):
- local: `income-bundle serve` (the gateway, MLServer over the bundle's models, the monitor) as
  `make monitor`'s Prometheus scrapes it (MonitoringStack's scrape jobs);
- seldon: the objects the roles of ansible/playbooks/seldon-all.yaml apply (their templates
  rendered with the defaults), and the pods Seldon's operator makes of them, as the PodMonitors
  among them select pods and ports;
- kserve: the KServe path's manifests (kserve/*.yaml, PodMonitor included: the world with
  kserve_income_monitoring) and the objects the roles of kserve-all.yaml render for it.

What a component exports comes from its code where it is ours: the registries of the gateway and
the monitor as they are built, and the metrics the MLServer runtimes create when they load. For
Seldon's agent and pipeline gateway it comes from Seldon's source (the facts in
tests/support/seldon_metrics.py, cited by file and tag). MLServer's own series
(model_infer_request_*, rest_server_*, grpc_server_*) are left out: nothing reads them, and a query
that starts to will fail here until they are added. The series a query reads come from
promql-parser's syntax tree, never from the text. The checks that need no rendering nor probe
(Seldon's facts against the gateway and Seldon's monitors) are tests/unit/test_metric_worlds.py.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from income_bundle.monitoring.dashboard import DASHBOARD_FILE, dashboard_queries, panel_worlds
from income_bundle_dev.upstream_checks import (
    KNATIVE_SERVICE_LABEL,
    KNATIVE_USER_PORT_NAME,
    SELDON_SERVER_METRICS_PORT,
    SELDON_SERVER_NAME_LABEL,
    SELDON_SERVER_POD_LABELS,
    _labels_match,
    find_upstream_dir,
)
from tests.support.alert_rules import RULES, alert_rules
from tests.support.metric_probe import registry_series
from tests.support.paths import ROOT
from tests.support.seldon_metrics import (
    SELDON_AGENT_METRICS_PORT,
    SELDON_AGENT_SERIES,
    SELDON_PIPELINE_GATEWAY_METRICS_PORT,
    SELDON_PIPELINE_GATEWAY_POD_LABELS,
    SELDON_PIPELINE_GATEWAY_SERIES,
)

ANSIBLE = ROOT / "ansible"
RENDER_PLAYBOOK = ROOT / "tests" / "ansible" / "render.yaml"
SETTINGS_FILES = tuple(
    path.resolve()
    for pattern in ("models/*", "detectors/*", "kserve/detectors/*")
    for path in sorted(ROOT.glob(f"{pattern}/model-settings.json"))
)
WORLDS = ("local", "seldon", "kserve")
CLUSTER_PLAYBOOKS = {"seldon": "seldon-all.yaml", "kserve": "kserve-all.yaml"}
# Where Models and detectors find the checkout in the cluster (their storageUri and commands).
MOUNT = "/mnt/income-bundle"
# The labels Prometheus puts on every scraped series; prometheus-operator adds the pod's.
STATIC_TARGET_LABELS = frozenset({"job", "instance"})
POD_TARGET_LABELS = STATIC_TARGET_LABELS | {"namespace", "pod", "container", "endpoint"}

# --- components and what they export ------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    name: str
    series: dict[str, frozenset[str]]  # sample name -> its label names


def gateway_component() -> Component:
    """The local gateway's /metrics: the registry of a Gateway over the bundle `serve` serves."""
    from income_bundle.seldon.bundle import load_bundle
    from income_bundle.seldon.gateway import Gateway

    gateway = Gateway(load_bundle(ROOT / "seldon-examples", ROOT), forwarder=None, contracts={})
    return Component("the local gateway", registry_series(gateway.metrics.registry))


@functools.cache
def monitor_component() -> Component:
    """The monitor's /metrics (income_bundle.monitoring.service), over an empty store."""
    import tempfile

    from income_bundle.monitoring.service import Monitor
    from income_bundle.monitoring.store import SqliteStore

    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "monitor.sqlite")
        try:
            registry = Monitor(store, {}).registry
            return Component("the monitor", registry_series(registry))
        finally:
            store.close()


@functools.cache
def _probe(*settings_files: Path) -> dict[Path, dict[str, frozenset[str]]]:
    """tests/support/metric_probe.py over model-settings files, in a process of its own (MLServer's
    protobuf module and tritonclient's cannot share one)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.metric_probe", *map(str, settings_files)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        Path(path): {name: frozenset(labels) for name, labels in series.items()}
        for path, series in found.items()
    }


def runtime_series(settings_file: Path) -> dict[str, frozenset[str]]:
    """What the runtime a model-settings.json names exports (every model folder of the repo is
    probed at once, the first time)."""
    settings_file = settings_file.resolve()
    probed = _probe(*SETTINGS_FILES)
    return (
        probed[settings_file] if settings_file in probed else _probe(settings_file)[settings_file]
    )


def mlserver_component(settings_files: Iterable[Path]) -> Component:
    files = sorted(settings_files)
    series: dict[str, frozenset[str]] = {}
    for settings_file in files:
        for name, labels in runtime_series(settings_file).items():
            series[name] = series.get(name, frozenset()) | labels
    models = ", ".join(json.loads(f.read_text())["name"] for f in files)
    return Component(f"MLServer ({models})", series)


def _model_settings(storage_uri_folder: str) -> Path:
    return ROOT / storage_uri_folder.removeprefix(MOUNT).lstrip("/") / "model-settings.json"


# --- worlds -------------------------------------------------------------------------------------


@dataclass
class Target:
    job: str
    component: Component
    labels: frozenset[str]  # what Prometheus adds to every series of the target


@dataclass
class World:
    name: str
    targets: list[Target] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # scrape configs that select nothing known

    def exporters(self, metric: str) -> list[tuple[Target, frozenset[str]]]:
        """(target, label names) of every target whose series include `metric`; Prometheus
        writes `up` for every target."""
        if metric == "up":
            return [(target, target.labels) for target in self.targets]
        return [
            (target, target.component.series[metric] | target.labels)
            for target in self.targets
            if metric in target.component.series
        ]


def local_world() -> World:
    """MonitoringStack's scrape jobs for a LocalSeldon (not started: only its addresses are
    read), each target mapped to the component behind that address."""
    from income_bundle.seldon.bundle import load_bundle
    from income_bundle.seldon.local import LocalSeldon, ServeSettings
    from income_bundle_dev.monitoring_stack import MonitoringStack

    seldon = LocalSeldon(ServeSettings())
    stack = MonitoringStack.on_free_ports(seldon, "http://127.0.0.1:9/alerts")
    bundle = load_bundle(ROOT / "seldon-examples", ROOT)
    served = [model.local_folder(ROOT) / "model-settings.json" for model in bundle.models.values()]
    by_address = {
        seldon.http_url.removeprefix("http://"): gateway_component(),
        seldon.mlserver_metrics_url.removeprefix("http://").removesuffix("/metrics"): (
            mlserver_component(served)
        ),
    }
    if seldon.monitor_url:
        by_address[seldon.monitor_url.removeprefix("http://")] = monitor_component()
    world = World("local")
    for job in stack.prometheus_config()["scrape_configs"]:
        for static in job.get("static_configs", []):
            for address in static["targets"]:
                if address in by_address:
                    world.targets.append(
                        Target(job["job_name"], by_address[address], STATIC_TARGET_LABELS)
                    )
                else:
                    world.problems.append(f"job {job['job_name']} scrapes {address}: unknown")
    return world


@dataclass
class Pod:
    what: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, Component | str]  # port name -> component, or why it is unknown


def playbook_roles(playbook: Path) -> set[str]:
    roles: set[str] = set()
    for play in yaml.safe_load(playbook.read_text()):
        for key in ("import_playbook", "ansible.builtin.import_playbook"):
            if key in play:
                roles |= playbook_roles(playbook.parent / play[key])
        for role in play.get("roles", []):
            roles.add(role if isinstance(role, str) else role["role"])
    return roles


def rendered_files(world: str, rendered: Path) -> dict[str, list[Path]]:
    """The rendered templates of the world's roles, per role. tests/ansible/render.yaml renders
    each role's templates; a template rendered once per path says which with `platform` (seldon
    when unsaid), one rendered once serves every path."""
    roles = playbook_roles(ANSIBLE / "playbooks" / CLUSTER_PLAYBOOKS[world])
    (items,) = [t["loop"] for play in yaml.safe_load(RENDER_PLAYBOOK.read_text())
                for t in play["tasks"] if "loop" in t]  # fmt: skip
    per_path = {(item["role"], item["template"]) for item in items if "platform" in item}
    files: dict[str, list[Path]] = {}
    for item in items:
        if item["role"] not in roles:
            continue
        per_path_item = (item["role"], item["template"]) in per_path
        if per_path_item and item.get("platform", "seldon") != world:
            continue
        path = rendered / item.get("dest", item["template"].removesuffix(".j2"))
        files.setdefault(item["role"], []).append(path)
    return files


def _objects(paths: Iterable[Path]) -> list[dict]:
    return [
        doc
        for path in paths
        if path.suffix == ".yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and {"apiVersion", "kind", "metadata"} <= set(doc)
    ]


def _entrypoints(paths: Iterable[Path]) -> list[list[str]]:
    """The exec-form ENTRYPOINT of each rendered Dockerfile (a JSON array)."""
    found = []
    for path in paths:
        if path.name.endswith("Dockerfile"):
            for line in path.read_text().splitlines():
                if line.startswith("ENTRYPOINT "):
                    found.append(json.loads(line.removeprefix("ENTRYPOINT ")))
    return found


def _container_component(container: dict, entrypoints: list[list[str]]) -> Component | str:
    """What a container's process exports: MLServer over a model folder, or the monitor. A
    container that names no command runs its image's entrypoint: the image its role builds."""
    command = list(container.get("command") or [])
    if not command and len(entrypoints) == 1:
        command = entrypoints[0]
    if command[:2] == ["mlserver", "start"] and len(command) == 3:
        return mlserver_component([_model_settings(command[2])])
    if "income_bundle.monitoring.service" in command:
        return monitor_component()
    return f"container {container['name']} runs {shlex.join(command) or 'its image'}"


def _workload_pods(objects: list[dict], entrypoints: list[list[str]]) -> list[Pod]:
    pods = []
    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        namespace = meta.get("namespace", "default")
        if kind in ("Deployment", "StatefulSet"):
            template = obj["spec"]["template"]
            labels = dict(template["metadata"].get("labels", {}))
            containers = template["spec"]["containers"]
            ports = {
                port["name"]: _container_component(container, entrypoints)
                for container in containers
                for port in container.get("ports", [])
                if "name" in port
            }
        elif kind == "Service" and obj["apiVersion"].startswith("serving.knative.dev/"):
            template = obj["spec"]["template"]
            labels = {**template.get("metadata", {}).get("labels", {})}
            labels[KNATIVE_SERVICE_LABEL] = meta["name"]
            (container,) = template["spec"]["containers"]
            # Knative names the serving container's one port user-port on the pod.
            ports = {KNATIVE_USER_PORT_NAME: _container_component(container, entrypoints)}
        else:
            continue
        pods.append(Pod(f"{kind} {namespace}/{meta['name']}", namespace, labels, ports))
    return pods


def _seldon_pods(objects: list[dict]) -> list[Pod]:
    """The pods Seldon's operator runs: each MLServer Server's (the agent and MLServer with the
    income Models), and the runtime's pipeline gateway."""
    defaults = {}
    for role in ("seldon_core", "income_pipeline"):
        defaults.update(
            yaml.safe_load((ANSIBLE / "roles" / role / "defaults" / "main.yaml").read_text())
        )
    models = [
        yaml.safe_load((ROOT / "seldon-examples" / "models" / f"{name}.yaml").read_text())
        for name in defaults["income_pipeline_models"]
    ]
    served = [_model_settings(model["spec"]["storageUri"]) for model in models]
    agent = Component("Seldon's agent", SELDON_AGENT_SERIES)
    pods = []
    for server in (obj for obj in objects if obj["kind"] == "Server"):
        name, namespace = server["metadata"]["name"], server["metadata"]["namespace"]
        assert server["spec"]["serverConfig"] == "mlserver", name
        labels = {**SELDON_SERVER_POD_LABELS, SELDON_SERVER_NAME_LABEL: name}
        ports = {
            SELDON_SERVER_METRICS_PORT: mlserver_component(served),
            SELDON_AGENT_METRICS_PORT: agent,
        }
        pods.append(Pod(f"Server {namespace}/{name}", namespace, labels, ports))
    gateway = Component("Seldon's pipeline gateway", SELDON_PIPELINE_GATEWAY_SERIES)
    pods.append(
        Pod(
            "seldon-pipelinegateway",
            defaults["seldon_core_namespace"],
            SELDON_PIPELINE_GATEWAY_POD_LABELS,
            {SELDON_PIPELINE_GATEWAY_METRICS_PORT: gateway},
        )
    )
    return pods


def cluster_world(name: str, rendered: Path) -> World:
    """The world's PodMonitors, each endpoint resolved to the pods it selects and the component
    behind the named port; job = <namespace>/<PodMonitor>, as prometheus-operator names it."""
    per_role = rendered_files(name, rendered)
    if name == "kserve":
        per_role["kserve_income"] = sorted((ROOT / "kserve").glob("*.yaml"))
    objects, pods = [], []
    for files in per_role.values():
        objects += _objects(files)
        pods += _workload_pods(_objects(files), _entrypoints(files))
    if name == "seldon":
        pods += _seldon_pods(objects)
    world = World(name)
    for monitor in (obj for obj in objects if obj["kind"] == "PodMonitor"):
        meta, spec = monitor["metadata"], monitor["spec"]
        job = f"{meta['namespace']}/{meta['name']}"
        if "jobLabel" in spec:
            world.problems.append(f"PodMonitor {job}: jobLabel is not understood here")
        selector = spec.get("namespaceSelector", {})
        namespaces = selector.get("matchNames") or [meta["namespace"]]
        for endpoint in spec["podMetricsEndpoints"]:
            port = endpoint.get("port")
            selected = [
                pod
                for pod in pods
                if (selector.get("any") or pod.namespace in namespaces)
                and _labels_match(spec["selector"], pod.labels)
                and port in pod.ports
            ]
            if not selected:
                world.problems.append(
                    f"PodMonitor {job} port {port!r} selects no pod the {name} world runs"
                )
            for pod in selected:
                component = pod.ports[port]
                if isinstance(component, str):
                    world.problems.append(
                        f"PodMonitor {job} scrapes {pod.what}, whose {component}: what it "
                        f"exports is unknown here"
                    )
                else:
                    world.targets.append(Target(job, component, POD_TARGET_LABELS))
    return world


@pytest.fixture(scope="module")
def worlds(rendered) -> dict[str, World]:
    return {
        "local": local_world(),
        "seldon": cluster_world("seldon", rendered),
        "kserve": cluster_world("kserve", rendered),
    }


# --- what the rules and panels read -------------------------------------------------------------


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _matches(matcher: Any, value: str) -> bool:
    op = matcher.op
    if op == promql_parser.MatchOp.Equal:
        return value == matcher.value
    if op == promql_parser.MatchOp.NotEqual:
        return value != matcher.value
    matched = re.fullmatch(matcher.value, value) is not None  # PromQL regexes are anchored
    return matched if op == promql_parser.MatchOp.Re else not matched


def read_problems(expr: str, world: World) -> list[str]:
    """What `expr` reads that no target of `world` has: a metric, a label it matches on, or,
    for a `job` matcher, a scrape job."""
    problems = []
    for selector in selectors(expr):
        matchers = selector.matchers.matchers
        name = selector.name or next(
            (
                m.value
                for m in matchers
                if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
            ),
            None,
        )
        if name is None:
            problems.append(f"{selector}: selects by a pattern of names")
            continue
        exporters = world.exporters(name)
        if not exporters:
            problems.append(f"{name}: no component scraped in the {world.name} world exports it")
            continue
        for matcher in matchers:
            if matcher.name == "__name__":
                continue
            if not any(matcher.name in labels for _, labels in exporters):
                problems.append(f"{name}: has no label {matcher.name} in the {world.name} world")
            elif matcher.name == "job":
                jobs = sorted({target.job for target, _ in exporters})
                if not any(_matches(matcher, job) for job in jobs):
                    problems.append(
                        f"{name}{{{matcher.name}...{matcher.value!r}}}: no scrape job of the "
                        f"{world.name} world matches (jobs: {', '.join(jobs)})"
                    )
    return problems


def declared_worlds(text: str, what: str) -> tuple[str, ...]:
    named = tuple(part.strip() for part in text.split(","))
    assert named and set(named) <= set(WORLDS), f"{what}: worlds {text!r} (known: {WORLDS})"
    return named


def marking_problems(
    items: dict[str, tuple[tuple[str, ...], list[str]]], world: World
) -> list[str]:
    """For each item (title -> (worlds it is marked for, its queries)): marked for the world but
    reading what it lacks, or not marked although the world has everything it reads."""
    problems = []
    for title, (marked, queries) in items.items():
        lacking = [p for expr in queries for p in read_problems(expr, world)]
        if world.name in marked and lacking:
            problems += [f"{title}: {p}" for p in lacking]
        elif world.name not in marked and not lacking:
            problems.append(
                f"{title}: every series it reads is exported in the {world.name} world; "
                f"mark it for {world.name}"
            )
    return problems


def rule_items(path: Path = RULES) -> dict[str, tuple[tuple[str, ...], list[str]]]:
    return {
        f"alert {name}": (
            declared_worlds(rule["annotations"]["worlds"], f"alert {name}"),
            [rule["expr"]],
        )
        for name, rule in alert_rules(path).items()
    }


def panel_items() -> dict[str, tuple[tuple[str, ...], list[str]]]:
    dashboard = json.loads((ROOT / DASHBOARD_FILE).read_text())
    panels = [
        panel
        for row in dashboard["panels"]
        for panel in (row.get("panels", []) if row["type"] == "row" else [row])
    ]
    queries: dict[str, list[str]] = {}
    for title, expr in dashboard_queries(dashboard):
        queries.setdefault(title, []).append(expr)
    return {
        f"panel {panel['title']!r}": (panel_worlds(panel), queries[panel["title"]])
        for panel in panels
    }


# --- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WORLDS)
def test_every_scrape_target_is_a_known_component(worlds, name):
    world = worlds[name]
    assert world.targets, f"nothing is scraped in the {name} world"
    assert world.problems == []


@pytest.mark.parametrize("name", WORLDS)
def test_every_alert_rule_reads_what_its_worlds_export(worlds, name):
    assert marking_problems(rule_items(), worlds[name]) == []


@pytest.mark.parametrize("name", WORLDS)
def test_every_dashboard_panel_reads_what_its_worlds_export(worlds, name):
    assert marking_problems(panel_items(), worlds[name]) == []


def test_the_worlds_have_what_the_issue_asks(worlds):
    """Request series from Seldon's components in the cluster and from the gateway locally; the
    detectors' series in all three; no pipeline series on KServe."""
    for name in ("local", "seldon"):
        for metric in ("seldon_pipeline_infer_total", "seldon_model_infer_api_seconds_bucket"):
            assert worlds[name].exporters(metric), (name, metric)
    cluster = {t.component.name for t, _ in worlds["seldon"].exporters("seldon_model_infer_total")}
    assert cluster == {"Seldon's agent"}
    for name in WORLDS:
        assert worlds[name].exporters("income_drift_feature_p_value"), name
        assert worlds[name].exporters("income_outlier_rows_total"), name
    assert not worlds["kserve"].exporters("seldon_pipeline_infer_total")


def test_an_old_gateway_name_in_a_rule_is_caught(worlds, tmp_path):
    """The check bites: the error rule reading seldon_gateway_requests_total fails in the worlds
    it is marked for, naming the rule, the world and the series."""
    text = RULES.read_text()
    changed = text.replace(
        "sum by (pipeline) (rate(seldon_pipeline_infer_total[5m]))",
        "sum by (pipeline) (rate(seldon_gateway_requests_total[5m]))",
    )
    assert changed != text
    path = tmp_path / RULES.name
    path.write_text(changed)
    for name in ("local", "seldon"):
        problems = marking_problems(rule_items(path), worlds[name])
        assert problems == [
            f"alert IncomeErrorRateHigh: seldon_gateway_requests_total: no component scraped in "
            f"the {name} world exports it"
        ]


def test_a_label_or_job_a_world_lacks_and_an_unearned_mark_are_caught(worlds):
    seldon, kserve = worlds["seldon"], worlds["kserve"]
    assert read_problems('seldon_model_infer_total{target!="x"}', seldon) == [
        "seldon_model_infer_total: has no label target in the seldon world"
    ]
    (problem,) = read_problems('up{job="income-mlserver"}', seldon)
    assert "no scrape job of the seldon world matches" in problem
    assert "seldon-mesh/income-mlserver" in problem
    items = {"alert X": (("local",), ["max(income_drift_is_drift)"])}
    assert marking_problems(items, kserve) == [
        "alert X: every series it reads is exported in the kserve world; mark it for kserve"
    ]


def test_runtimes_are_probed_for_their_metrics_and_kserves_add_none():
    """The probe finds the metrics the runtimes create; the KServe module creates none of its own
    (so loading its classes' runtimes base is loading what it exports)."""
    import ast

    drift = runtime_series(ROOT / "detectors" / "income-drift" / "model-settings.json")
    assert drift["income_drift_feature_p_value"] == {"model", "feature"}
    kserve_drift = ROOT / "kserve" / "detectors" / "income-drift" / "model-settings.json"
    assert runtime_series(kserve_drift) == drift
    source = ROOT / "src" / "income_bundle" / "runtime" / "cloudevents.py"
    tree = ast.parse(source.read_text())
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not any(name and name.startswith("prometheus_client") for name in imported)
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert "_metric" not in calls


def test_seldon_pod_facts_agree_with_the_setup_chart_the_role_installs(rendered, tmp_path):
    """The agent's and the pipeline gateway's metrics ports, and the pipeline gateway's name,
    in the seldon-core-v2-setup chart as the seldon_core role renders it."""
    from income_bundle_dev.upstream_checks import (
        ChartUnavailableError,
        chart_dir,
        chart_installs,
        find_helm,
        helm_template,
        node_kubernetes_version,
    )

    helm = find_helm()
    if helm is None:
        pytest.skip("helm not found: .ci/run builds it (see tests/cluster/test_upstream_charts.py)")
    (install,) = [i for i in chart_installs(ANSIBLE / "roles", rendered)
                  if i.chart == "seldon-core-v2-setup"]  # fmt: skip
    try:
        directory = chart_dir(install, find_upstream_dir(ROOT), tmp_path)
    except ChartUnavailableError as error:
        pytest.skip(f"pinned chart unavailable: {error}")
    version = ".".join(map(str, node_kubernetes_version(ANSIBLE / "roles")))
    objects = helm_template(helm, directory, install, version)
    (server_config,) = [o for o in objects
                        if o["kind"] == "ServerConfig" and o["metadata"]["name"] == "mlserver"]  # fmt: skip
    ports = {
        container["name"]: {port.get("name") for port in container.get("ports", [])}
        for container in server_config["spec"]["podSpec"]["containers"]
    }
    assert SELDON_AGENT_METRICS_PORT in ports["agent"]
    assert SELDON_SERVER_METRICS_PORT in ports["mlserver"]
    (seldon_config,) = [o for o in objects if o["kind"] == "SeldonConfig"]
    components = {c["name"]: c for c in seldon_config["spec"]["components"]}
    gateway = components[SELDON_PIPELINE_GATEWAY_POD_LABELS["app.kubernetes.io/name"]]
    gateway_ports = {p.get("name") for c in gateway["podSpec"]["containers"] for p in c["ports"]}
    assert SELDON_PIPELINE_GATEWAY_METRICS_PORT in gateway_ports
