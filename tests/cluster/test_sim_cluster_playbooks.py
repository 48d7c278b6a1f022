"""The playbooks themselves, run with ansible-playbook against the simulated cluster (a real
kube-apiserver and etcd, the stock controllers, kwok's simulated kubelets: no container runs),
end to end and twice, then torn down.

What runs for real: every task of seldon-all.yaml, kserve-all.yaml and teardown.yaml that does not
need Docker, kind, a running container or the internet: the argument specs and preflight, helm
installing the pinned charts of ../shared/upstream/charts (hooks, waits, a second run that must
not upgrade), every manifest and rendered template applied by kubernetes.core, Knative's release
files (tests/data/knative-release, checked against the release in
tests/unit/test_sim_cluster_playbooks.py), every wait, and the teardown of a cluster that stays.
The controllers that cannot run are stood in for (income_bundle_dev.standins: the conditions,
addresses and Services the real ones write, with their sources), and the API server calls no
admission webhook (their servers are pods that never run).

Switched off by the roles' documented variables (EXISTING_CLUSTER below), so not exercised
here: creating the kind cluster, downloading the seldon CLI, the final calls to seldon-mesh and
to the InferenceService, and (kserve_stack) downloading Knative's release files: they are copied
from tests/data/knative-release instead. The images are built, saved for the node's platform and
loaded into the node as archives, by stand-ins for docker and kind
(income_bundle_dev.container_standins: they check what they are asked and record it).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from income_bundle_dev import simcluster
from tests.support.ansible_files import ANSIBLE, BIN
from tests.support.paths import KNATIVE_RELEASE, UPSTREAM

PLAYBOOK_TIMEOUT_S = 1800
# Waits are satisfied within seconds here; a wait that is never satisfied fails in minutes, not
# in the roles' default ten.
WAIT_S = 180

# Tasks the first runs skip ("role : task", as Ansible names them), each for a reason: the
# switches of _existing_cluster_vars, or a branch the default settings do not take. Any other
# skipped task fails the test (a wait skipped by mistake would otherwise pass unnoticed).
SKIPPED_ON_PURPOSE = {
    "no kind node to size (kind_cluster_create false)": [
        "preflight : Probe Docker's memory and CPUs (the kind node's, since it runs as a container)",
    ],
    "setup-ecosystem checks kubectl and helm only (preflight_tools)": [
        "preflight : Probe the Docker daemon",
        "preflight : Probe Docker's buildx plugin (community.docker.docker_image_build builds with it)",
        "preflight : Probe kind",
    ],
    "the deploy plays check kubectl only": ["preflight : Probe helm"],
    "kind_cluster_create=false": [
        "kind_cluster : List the kind clusters",
        "kind_cluster : Check that the checkout holds the trained artifacts",
        "kind_cluster : Assert the artifacts exist before mounting them",
        "kind_cluster : Create the build folder",
        "kind_cluster : Render the kind config",
        "kind_cluster : Create the kind cluster",
        "kind_cluster : Read kubectl's current context",
        "kind_cluster : Point kubectl at the cluster",
    ],
    "charts from ../shared/upstream/charts (*_chart_dir)": [
        "ecosystem : Add the cert-manager chart repository",
        "ecosystem : Add the Strimzi chart repository",
        "ecosystem : Add the prometheus-community chart repository",
        "seldon_core : Add Seldon's chart repository",
        "kserve_stack : Add the cert-manager chart repository",
    ],
    "seldon_core_install_cli=false": [
        "seldon_core : Choose the seldon CLI for this machine, or stop before anything changes",
        "seldon_core : Create the folder for the seldon CLI",
        "seldon_core : Read the recorded checksum of the seldon CLI",
        "seldon_core : Choose the sha256 the CLI must have (pinned, else recorded at first download)",
        "seldon_core : Download the seldon CLI, checked against its sha256",
        "seldon_core : Hash the downloaded seldon CLI",
        "seldon_core : Record the CLI's sha256 on first download (trust on first use)",
    ],
    "kserve-all after seldon-all: the monitor's image is on the node already": [
        "income_monitor : Load the image into kind",
    ],
    "income_pipeline_deploy_with=k8s (the default)": [
        "income_pipeline : Load the Models and Pipelines with the seldon CLI and wait for them",
    ],
    "income_pipeline_check_mesh=false": [
        "income_pipeline : Check that seldon-mesh answers on its published port",
    ],
    "kserve_income_check_call=false": [
        "kserve_income : Forward the Kourier gateway to 127.0.0.1 for a minute",
        "kserve_income : Call the InferenceService through the ingress",
        "kserve_income : Say where the InferenceService is",
    ],
    "kserve_income_monitoring=false (the default: setup-kserve installs no Prometheus operator)": [
        "kserve_income : Apply the detectors' PodMonitor",
        "income_monitor : Look for the Prometheus operator's PodMonitor CRD",
        "income_monitor : Assert the PodMonitor CRD exists",
        "income_monitor : Apply the monitor's PodMonitor",
    ],
    "the monitor's other platform (KServe's broker and Triggers on the Seldon path)": [
        "income_monitor : Look for the broker the Triggers subscribe on",
        "income_monitor : Assert the broker exists",
        "income_monitor : Apply the Triggers that deliver KServe's events to the monitor",
        "income_monitor : Wait for each Trigger to be ready",
    ],
    # With tracing on the role's objects are applied to a real API server by
    # tests/cluster/test_tracing_cluster.py instead of a third pair of playbook runs.
    "tracing_backend off (the default; the setup plays run the tracing role only when on)": [
        "tracing : Validating arguments against arg spec 'main' - Install the tracing backend (Jaeger v2 or SigNoz) the cluster paths send traces to.",
        "tracing : Check the types of the string variables",
        "tracing : Create the tracing namespace",
        "tracing : Install Jaeger v2 (its config, Deployment and Service)",
        "tracing : Wait for the Jaeger Deployment to be available",
        "tracing : Add the SigNoz chart repository",
        "tracing : Install SigNoz (ClickHouse, its operator and ZooKeeper, the collector, SigNoz)",
        "tracing : Say where the traces are",
        "kserve_income : Log each request's traceparent with its events (tracing on)",
    ],
}
# Waits and installs that must have run (not skipped) in the first runs.
SELDON_MUST_RUN = {
    "kind_cluster : Wait for the node to be Ready",
    "ecosystem : Install cert-manager",
    "ecosystem : Install the Strimzi operator",
    "ecosystem : Wait for Kafka to be Ready",
    "ecosystem : Install kube-prometheus-stack",
    "seldon_core : Install the Seldon Core v2 CRDs",
    "seldon_core : Install the Seldon runtime (seldon-core-v2-runtime)",
    "seldon_core : Wait for the Seldon runtime to be Ready",
    "seldon_core : Publish seldon-mesh on the NodePort kind maps to 127.0.0.1",
    "seldon_core : Wait for the income Server to be Ready",
    "income_pipeline : Wait for every Model to be available",
    "income_pipeline : Wait for every Pipeline to be ready",
    "income_pipeline : Apply the MLServer PodMonitor and the income alert rules",
    "income_monitor : Wait for the monitor's StatefulSet to be ready",
}
KSERVE_MUST_RUN = {
    "kserve_stack : Install cert-manager (the same release as the Seldon path's)",
    "kserve_stack : Install Knative Serving, Kourier and Knative Eventing",
    "kserve_stack : Wait for the webhook Service to have a ready endpoint",
    "kserve_stack : Configure Knative (Kourier, the route domain, PVC volumes)",
    "kserve_stack : Wait for the Knative deployments to be available",
    "kserve_stack : Install the KServe controller in Knative mode",
    "kserve_income : Wait for the broker, the detectors, the triggers and the InferenceService",
    "kserve_income : Read the InferenceService's URL",
    "income_monitor : Wait for each Trigger to be ready",
}
# Kinds whose objects the cluster keeps changing by itself, not created by the playbooks.
NOT_INVENTORIED = {"events", "events.events.k8s.io", "leases.coordination.k8s.io"}


def _missing_requirement() -> str | None:
    from income_bundle_dev.upstream_checks import HELM_VERSION, find_helm, helm_cache_dir

    if reason := simcluster.unavailable_reason():
        return reason
    if not (UPSTREAM / "charts").is_dir():
        return f"the pinned upstream charts are not beside the checkout ({UPSTREAM / 'charts'})"
    if find_helm() is None:
        return f"helm not on PATH or in {helm_cache_dir()}/bin (.ci/run builds helm {HELM_VERSION})"
    return None


pytestmark = pytest.mark.skipif(
    _missing_requirement() is not None, reason=str(_missing_requirement())
)


@dataclass
class PlaybookRun:
    playbook: str
    returncode: int
    seconds: float
    report: dict  # the ansible.posix.json callback's document
    stderr: str

    @property
    def stats(self) -> dict:
        return self.report.get("stats", {}).get("localhost", {})

    def results(self) -> list[tuple[str, dict]]:
        """(task name, localhost's result) for every task run, in order."""
        return [
            (task["task"]["name"], task["hosts"]["localhost"])
            for play in self.report.get("plays", [])
            for task in play["tasks"]
            if "localhost" in task["hosts"]
        ]

    def tasks(self, state: str) -> list[str]:
        """Names of the tasks whose result is `state` (changed, skipped, failed)."""
        return [name for name, result in self.results() if result.get(state)]

    def slowest(self, count: int = 5) -> str:
        """The tasks that took longest, from the callback's durations."""
        from datetime import datetime

        def seconds(task: dict) -> float:
            duration = task["task"].get("duration") or {}
            if "start" not in duration or "end" not in duration:
                return 0.0
            start, end = (datetime.fromisoformat(duration[k].rstrip("Z")) for k in ("start", "end"))
            return (end - start).total_seconds()

        tasks = [task for play in self.report.get("plays", []) for task in play["tasks"]]
        ranked = sorted(tasks, key=seconds, reverse=True)[:count]
        return ", ".join(f"{task['task']['name']} {seconds(task):.0f} s" for task in ranked)

    def explain(self) -> str:
        failed = [
            f"{name}: {result.get('msg') or result}"[:2000]
            for name, result in self.results()
            if result.get("failed")
        ]
        return (
            f"{self.playbook} exited {self.returncode} after {self.seconds:.0f} s; failed tasks:\n"
            + "\n".join(failed or ["(none reported)"])
            + f"\nstderr:\n{self.stderr[-3000:]}"
        )


@dataclass
class Sim:
    cluster: simcluster.SimCluster
    extra_vars: Path
    build_dir: Path
    before: set[tuple[str, str, str]]
    runs: dict[str, PlaybookRun]


def _chart_dir(work: Path) -> Path:
    """../shared/upstream/charts as their releases publish them: cert-manager's Chart.yaml written
    from its template (upstream_checks.chart_dir) and its templates/crds.yaml added, as its
    release does (make/manifests.mk joins deploy/crds/*.yaml, each guarded by crds.enabled or
    installCRDs). Its CRDs are ../shared/upstream/crds/cert-manager-v1.16.2-all-crds.yaml: those
    templates rendered for release cert-manager with crds.enabled and crds.keep, the values the
    roles install it with. The other charts as they are."""
    from income_bundle_dev.upstream_checks import ChartInstall, chart_dir

    charts = work / "charts"
    charts.mkdir()
    for source in sorted((UPSTREAM / "charts").iterdir()):
        name, _, version = source.name.rpartition("-")
        install = ChartInstall("", "", name, name, version, "", {}, "")
        ready = chart_dir(install, UPSTREAM, work / "completed")
        if name == "cert-manager" and not (ready / "templates" / "crds.yaml").exists():
            crds = (UPSTREAM / "crds" / f"cert-manager-{version}-all-crds.yaml").read_text()
            (ready / "templates" / "crds.yaml").write_text(
                "{{- if or .Values.crds.enabled .Values.installCRDs }}\n" + crds + "\n{{- end }}\n"
            )
        (charts / source.name).symlink_to(ready)
    return charts


def _existing_cluster_vars(work: Path, charts: Path) -> dict:
    """What a user with a cluster of their own (here the simulated one) sets: no kind cluster
    created, charts and Knative's release files from folders, no calls to servers. The images are
    built and loaded (by the docker and kind stand-ins)."""
    return {
        "kind_cluster_create": False,
        "seldon_core_install_cli": False,
        "income_pipeline_check_mesh": False,
        "kserve_income_check_call": False,
        "ecosystem_chart_dir": str(charts),
        "seldon_core_chart_dir": str(charts),
        "kserve_stack_chart_dir": str(charts),
        "kserve_stack_knative_manifests_dir": str(KNATIVE_RELEASE),
        # Build outputs (the Knative files and their recorded sha256) outside the checkout.
        "seldon_core_build_dir": str(work / "build" / "cluster"),
        "kserve_stack_build_dir": str(work / "build" / "kserve"),
        "income_monitor_build_dir": str(work / "build" / "monitor"),
        "teardown_knative_manifests_dir": str(work / "build" / "kserve" / "manifests"),
        "ecosystem_wait_timeout_s": WAIT_S,
        "seldon_core_wait_timeout_s": WAIT_S,
        "income_pipeline_wait_timeout_s": WAIT_S,
        "kserve_stack_wait_timeout_s": WAIT_S,
        "kserve_income_wait_timeout_s": WAIT_S,
        "teardown_wait_timeout_s": WAIT_S,
        "ecosystem_helm_timeout": f"{WAIT_S}s",
        "seldon_core_helm_timeout": f"{WAIT_S}s",
        "kserve_stack_helm_timeout": f"{WAIT_S}s",
    }


def _inventory(cluster: simcluster.SimCluster) -> set[tuple[str, str, str]]:
    """(resource, namespace, name) of every listable object in the cluster."""
    resources = [
        name
        for name in cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
        if name not in NOT_INVENTORIED
    ]
    listed = cluster.kubectl("get", ",".join(resources), "--all-namespaces", "-o", "json")
    return {
        (
            f"{item['kind']}.{item['apiVersion'].rpartition('/')[0]}",
            item["metadata"].get("namespace", ""),
            item["metadata"]["name"],
        )
        for item in json.loads(listed.stdout)["items"]
    }


def _run(sim: Sim, playbook: str) -> PlaybookRun:
    from income_bundle_dev.upstream_checks import find_helm

    path = os.pathsep.join(
        [
            str(sim.build_dir / "standins" / "bin"),
            str(BIN),
            str(find_helm().parent),
            sim.cluster.env["PATH"],
        ]
    )
    env = {
        **sim.cluster.env,
        "PATH": path,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        # helm's caches and repositories, away from the user's.
        "HELM_CACHE_HOME": str(sim.build_dir / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(sim.build_dir / "helm" / "config"),
        "HELM_DATA_HOME": str(sim.build_dir / "helm" / "data"),
    }
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), f"playbooks/{playbook}", "-e", f"@{sim.extra_vars}"],
        cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT_S,
    )  # fmt: skip
    seconds = time.monotonic() - started
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        report = {}
    run = PlaybookRun(
        playbook, result.returncode, seconds, report, result.stderr + result.stdout[-2000:]
    )
    print(f"\n{playbook}: {seconds:.0f} s, {run.stats}; slowest: {run.slowest()}", flush=True)
    return run


@pytest.fixture(scope="module")
def sim(tmp_path_factory, training_report):
    """One simulated cluster for the module, with the stand-ins running; the playbook runs are
    recorded in `runs` in the order the tests make them."""
    from income_bundle_dev import container_standins
    from income_bundle_dev.standins import KIND_STORAGE_CLASS, StandInControllers

    work = tmp_path_factory.mktemp("sim-playbooks")
    extra_vars = work / "existing-cluster.json"
    extra_vars.write_text(json.dumps(_existing_cluster_vars(work, _chart_dir(work))))
    with (
        simcluster.SimCluster(admission_webhooks=False) as cluster,
        StandInControllers(cluster.kubeconfig) as stand_ins,
    ):
        # What kind's node image installs (the income monitor's store claims a volume of it).
        assert not cluster.server_side_apply([KIND_STORAGE_CLASS])
        # docker and kind for the image builds and loads: the node's platform is its arch label.
        (node,) = cluster.get_json("nodes")["items"]
        arch = node["metadata"]["labels"]["kubernetes.io/arch"]
        container_standins.install(work / "standins" / "bin", work / "standins", arch, "income")
        yield Sim(cluster, extra_vars, work, _inventory(cluster), {})
    assert stand_ins.error is None, stand_ins.error
    assert container_standins.read_state(work / "standins")["errors"] == []


def _first_and_second(sim: Sim, playbook: str) -> tuple[PlaybookRun, PlaybookRun]:
    if playbook not in sim.runs:
        first = _run(sim, playbook)
        assert first.returncode == 0, first.explain()
        sim.runs[playbook] = first
        sim.runs[playbook + " again"] = _run(sim, playbook)
    return sim.runs[playbook], sim.runs[playbook + " again"]


def _condition(obj: dict, kind: str) -> str | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == kind:
            return condition["status"]
    return None


def _assert_ran_as_documented(run: PlaybookRun, must_run: set[str]) -> None:
    documented = {task for tasks in SKIPPED_ON_PURPOSE.values() for task in tasks}
    skipped = set(run.tasks("skipped"))
    assert not skipped - documented, (
        f"{run.playbook} skipped tasks nobody switched off: {sorted(skipped - documented)}"
    )
    ran = {name for name, result in run.results() if not result.get("skipped")}
    assert must_run <= ran, f"{run.playbook} did not run {sorted(must_run - ran)}"


def _assert_second_run_changes_nothing(run: PlaybookRun) -> None:
    assert run.returncode == 0, run.explain()
    assert run.stats.get("changed") == 0, (
        f"{run.playbook}, second run: changed={run.stats.get('changed')} in {run.tasks('changed')}"
    )
    assert run.stats.get("ok", 0) > 0  # the recap was read, not an empty document


def test_seldon_all_runs_end_to_end(sim):
    first, _ = _first_and_second(sim, "seldon-all.yaml")
    _assert_ran_as_documented(first, SELDON_MUST_RUN)
    cluster = sim.cluster
    for kind in ("models", "pipelines"):
        items = cluster.get_json("-n", "seldon-mesh", kind)["items"]
        wanted = "ModelReady" if kind == "models" else "PipelineReady"
        assert items and all(_condition(item, wanted) == "True" for item in items), kind
    mesh = cluster.get_json("-n", "seldon-mesh", "service", "seldon-mesh")
    assert mesh["spec"]["type"] == "NodePort"
    assert mesh["spec"]["ports"][0]["nodePort"] == 30080
    monitors = cluster.get_json("-n", "seldon-mesh", "podmonitors,prometheusrules")["items"]
    assert {"income-mlserver", "income-alerts"} <= {item["metadata"]["name"] for item in monitors}
    # The images the Server and the monitor run were built, saved for the node's platform and
    # loaded into the node (container_standins checks each step).
    _assert_images_on_the_node(sim, [
        *(c["image"] for c in cluster.get_json("-n", "seldon-mesh", "server", "mlserver-income")[
            "spec"]["podSpec"]["containers"] if "image" in c),
        *(c["image"] for c in cluster.get_json("-n", "seldon-mesh", "statefulset", "income-monitor")[
            "spec"]["template"]["spec"]["containers"]),
    ])  # fmt: skip


def _assert_images_on_the_node(sim: Sim, images: list[str]) -> None:
    from income_bundle_dev.container_standins import node_reference, read_state

    state = read_state(sim.build_dir / "standins")
    assert state["errors"] == []
    assert images and {node_reference(i) for i in images} <= set(state["node_images"]), state
    saves = [c["args"] for c in state["calls"] if c["args"][:2] == ["image", "save"]]
    assert saves and all(["--platform", f"linux/{state['arch']}"] == s[2:4] for s in saves)


def test_seldon_all_second_run_changes_nothing(sim):
    _, second = _first_and_second(sim, "seldon-all.yaml")
    _assert_second_run_changes_nothing(second)


def test_kserve_all_runs_end_to_end_beside_the_seldon_path(sim):
    _first_and_second(sim, "seldon-all.yaml")  # the same cluster: cert-manager is shared
    first, _ = _first_and_second(sim, "kserve-all.yaml")
    _assert_ran_as_documented(first, KSERVE_MUST_RUN)
    isvc = sim.cluster.get_json("-n", "income-kserve", "inferenceservice", "income")
    assert isvc["status"]["url"] == "http://income-predictor.income-kserve.example.com"
    # The detectors are cluster-local Knative Services: their routes live under svc.cluster.local.
    drift = sim.cluster.get_json("-n", "income-kserve", "ksvc", "income-drift")
    assert drift["status"]["url"] == "http://income-drift.income-kserve.svc.cluster.local"
    runtime = sim.cluster.get_json("-n", "income-kserve", "servingruntime", "income-mlserver")
    _assert_images_on_the_node(
        sim,
        [c["image"] for c in runtime["spec"]["containers"]]
        + [c["image"] for c in drift["spec"]["template"]["spec"]["containers"]],
    )
    said = [
        result.get("msg", "")
        for name, result in first.results()
        if name == "kserve_income : Say where the InferenceService is (not called)"
    ]
    assert said == [f"{isvc['status']['url']} (not called: kserve_income_check_call is false)"]


def test_kserve_all_second_run_changes_nothing(sim):
    _first_and_second(sim, "seldon-all.yaml")
    _, second = _first_and_second(sim, "kserve-all.yaml")
    _assert_second_run_changes_nothing(second)


def test_teardown_leaves_the_cluster_as_it_found_it(sim):
    _first_and_second(sim, "seldon-all.yaml")
    _first_and_second(sim, "kserve-all.yaml")
    cluster = sim.cluster
    assert len(_inventory(cluster) - sim.before) > 100  # what the playbooks created
    first = _run(sim, "teardown.yaml")
    sim.runs["teardown.yaml"] = first
    assert first.returncode == 0, first.explain()
    assert first.stats.get("changed", 0) > 0
    from income_bundle_dev.upstream_checks import find_helm

    listed = subprocess.run(
        [str(find_helm()), "list", "--all-namespaces", "--output", "json"],
        env=cluster.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(listed.stdout) == []
    # Deleted objects may still be on their way out (garbage collection, the APIServices of
    # deleted CRDs): poll with a deadline.
    left: set = set()

    def nothing_left() -> bool:
        nonlocal left
        left = _inventory(cluster) - sim.before
        return not left

    try:
        cluster.wait_for("what the playbooks created is gone", nothing_left, timeout_s=120)
    except simcluster.SimClusterError:
        pytest.fail(f"left after teardown: {sorted(left)}")
    again = _run(sim, "teardown.yaml")
    sim.runs["teardown.yaml again"] = again
    _assert_second_run_changes_nothing(again)
