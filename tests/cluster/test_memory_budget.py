"""The memory the Seldon path asks of its one kind node, per seldon_core_profile, as a tested
fact: every chart rendered with the roles' values (helm template) and every role template
rendered by Ansible, their pods' memory requests and limits summed, against each profile's budget.

Budget: the Docker VM the profile is for, less KUBERNETES_RESERVE for what runs on the node
outside these pods. docs/cluster-path.md ("First run on a laptop") quotes the sums printed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from income_bundle_dev.upstream_checks import chart_dir, chart_installs, helm_template
from tests.cluster.test_upstream_charts import NODE_VERSION, helm, upstream  # noqa: F401
from tests.support.ansible_files import BIN, ROLES, role_defaults, run
from tests.support.memory_budget import GIB, budget_problem, gib, node_pods
from tests.support.paths import ROOT

# The Docker VM each profile is for (Docker Desktop's MemTotal is a little under the setting).
PROFILE_VM = {"laptop": 8 * GIB, "full": 16 * GIB}
# Kept free of the Seldon path's requests: Kubernetes' own pods on the kind node request little
# (kubeadm's etcd 100Mi, CoreDNS 2 x 70Mi, kindnet 50Mi; kube-apiserver, controller-manager,
# scheduler, kube-proxy and local-path-provisioner request none: an assumption from kubeadm's and
# kind's manifests, not read here) but use about 1 GiB (the API server most); kubelet, containerd
# and the VM's kernel take the rest.
KUBERNETES_RESERVE = 2 * GIB
# Charts and role templates of the Seldon path (setup-ecosystem, setup-seldon, deploy-income).
SELDON_PATH_ROLES = ("ecosystem", "seldon_core")
SELDON_PATH_TEMPLATES = ("kafka.yaml", "server.yaml", "income-monitor-seldon.yaml")


def request_budget(profile: str) -> int:
    return PROFILE_VM[profile] - KUBERNETES_RESERVE


def _render_templates(directory: Path, overrides: dict) -> Path:
    result = run(
        [str(BIN / "ansible-playbook"), str(ROOT / "tests" / "ansible" / "render.yaml"),
         "-e", f"render_dir={directory}", "-e", f"repo_root={ROOT}", "-e", json.dumps(overrides)],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


def _objects(profile_overrides, helm, upstream, work: Path, only_chart: str | None = None):  # noqa: F811
    """origin -> rendered documents of the Seldon path, with these variables given as -e."""
    rendered = _render_templates(work / "rendered", profile_overrides)
    installs = [
        i
        for i in chart_installs(ROLES, rendered, profile_overrides)
        if i.role in SELDON_PATH_ROLES and only_chart in (None, i.chart)
    ]
    objects = {
        f"{i.chart} chart": helm_template(helm, chart_dir(i, upstream, work), i, NODE_VERSION)
        for i in installs
    }
    for name in SELDON_PATH_TEMPLATES:
        objects[f"{name} template"] = [
            d for d in yaml.safe_load_all((rendered / name).read_text()) if d
        ]
    return objects


@pytest.fixture(scope="module", params=["laptop", "full"])
def profile(request, helm, upstream, tmp_path_factory):  # noqa: F811
    work = tmp_path_factory.mktemp(f"budget-{request.param}")
    (work / "rendered").mkdir()
    objects = _objects({"seldon_core_profile": request.param}, helm, upstream, work)
    return request.param, node_pods(objects)


def test_each_profile_fits_its_budget(profile):
    name, pods = profile
    requests = sum(p.total_request for p in pods)
    limits = sum(p.total_limit for p in pods)
    print(
        f"\n{name}: requests {gib(requests)}, limits {gib(limits)}, request budget "
        f"{gib(request_budget(name))} (VM {gib(PROFILE_VM[name])})"
    )
    for pod in sorted(pods, key=lambda p: p.total_request, reverse=True):
        print(
            f"  {pod.name}: {pod.total_request >> 20}Mi / {pod.total_limit >> 20}Mi ({pod.origin})"
        )
    assert budget_problem(name, pods, request_budget(name)) == ""
    # Every container at its limit at once still fits the VM itself.
    assert budget_problem(name, pods, PROFILE_VM[name], "limit") == ""
    # The preflight refuses a Docker with less than the requests and Kubernetes' reserve ...
    threshold = role_defaults("preflight")["preflight_docker_memory_gib"][name] * GIB
    assert requests + KUBERNETES_RESERVE <= threshold
    # ... and passes the VM the profile is for (Docker Desktop reports ~96% of its setting).
    assert threshold <= 0.96 * PROFILE_VM[name]


def test_the_sum_counts_every_memory_hungry_pod(profile):
    _, pods = profile
    names = {p.name for p in pods}
    assert {
        "seldon-scheduler", "seldon-dataflow-engine", "seldon-modelgateway",
        "seldon-pipelinegateway", "seldon-envoy", "Server mlserver-income", "Kafka dual-role",
        "income-monitor",
    } <= names  # fmt: skip
    assert "hodometer" not in names  # replicas 0 in the runtime


def test_laptop_is_smaller_than_upstream_and_full_is_upstream(profile):
    name, pods = profile
    by_name = {p.name: p for p in pods}
    dataflow = by_name["seldon-dataflow-engine"]
    server = by_name["Server mlserver-income"]
    if name == "full":  # seldon-core-v2-setup 2.10.2 values.yaml
        assert dataflow.request == 3 * 10**9
        assert by_name["seldon-scheduler"].request == GIB
        # agent 1Gi + rclone 128Mi + MLServer 2Gi
        assert server.request == GIB + 128 * 2**20 + 2 * GIB
    else:
        assert dataflow.request == GIB
        assert server.request == 256 * 2**20 + 128 * 2**20 + GIB


def test_the_dataflow_heap_follows_its_memory_limit(helm, upstream, tmp_path):  # noqa: F811
    (tmp_path / "rendered").mkdir()
    objects = _objects({}, helm, upstream, tmp_path, only_chart="seldon-core-v2-runtime")
    (runtime,) = [
        d for d in objects["seldon-core-v2-runtime chart"] if d["kind"] == "SeldonRuntime"
    ]
    (dataflow,) = [o for o in runtime["spec"]["overrides"] if o["name"] == "seldon-dataflow-engine"]
    (container,) = dataflow["podSpec"]["containers"]
    # The setup chart's container name, which the operator merges the override into.
    assert container["name"] == "dataflow-engine"
    assert {"name": "JAVA_TOOL_OPTIONS", "value": "-XX:MaxRAMPercentage=50.0"} in container["env"]


def test_a_value_over_the_budget_fails_naming_the_biggest_requests(helm, upstream, tmp_path):  # noqa: F811
    profiles = role_defaults("seldon_core")["seldon_core_profiles"]
    raised = {**profiles, "laptop": {**profiles["laptop"], "dataflow_memory": "4Gi"}}
    (tmp_path / "rendered").mkdir()
    objects = _objects(
        {"seldon_core_profile": "laptop", "seldon_core_profiles": raised},
        helm, upstream, tmp_path,
    )  # fmt: skip
    problem = budget_problem("laptop", node_pods(objects), request_budget("laptop"))
    assert problem.startswith("profile laptop: memory requests sum to ")
    assert "over its budget of 6.00 GiB" in problem
    assert "the biggest: seldon-dataflow-engine 4096Mi (seldon-core-v2-setup chart)" in problem


# --- With a tracing backend (make TRACING=jaeger|signoz, the tracing role) ----------------------

# The Docker VM a backend adds to its profile's. Jaeger fits inside the laptop VM. SigNoz asks
# 4 GiB of Docker for itself (signoz.io/docs/install/docker: "At least 4GB of memory allocated
# to Docker"; its Kubernetes guide asks 8 GB for a cluster of its own), which holds its requests
# and limits as the tracing role sizes them.
TRACING_VM_EXTRA = {"jaeger": 0, "signoz": 4 * GIB}


@pytest.fixture(scope="module")
def backend_pods(rendered, helm, upstream, tmp_path_factory):  # noqa: F811
    """backend -> the pods it puts on the node, as the tracing role installs it."""
    from tests.support.tracing import installs, render_template

    jaeger = node_pods(
        {"jaeger.yaml template": render_template("tracing", "jaeger.yaml.j2", "jaeger")}
    )
    (install,) = installs(rendered, "signoz", ("signoz",))
    docs = helm_template(helm, chart_dir(install, upstream, tmp_path_factory.mktemp("signoz")), install, NODE_VERSION)  # fmt: skip
    # ClickHouse's pods are made by its operator, one StatefulSet per replica of each shard,
    # from the ClickHouseInstallation's pod template.
    made = []
    for installation in (d for d in docs if d["kind"] == "ClickHouseInstallation"):
        (layout,) = [c["layout"] for c in installation["spec"]["configuration"]["clusters"]]
        for template in installation["spec"]["templates"]["podTemplates"]:
            made.append({
                "kind": "StatefulSet",
                "metadata": {"name": f"ClickHouse {installation['metadata']['name']}"},
                "spec": {"replicas": layout["shardsCount"] * layout["replicasCount"],
                         "template": {"spec": template["spec"]}},
            })  # fmt: skip
    # ZooKeeper comes from the clickhouse chart's own zookeeper subchart (file://../zookeeper),
    # which the pinned copy does not hold: counted from the values the chart hands it (the
    # signoz chart's clickhouse.zookeeper: a request, no limit).
    values = yaml.safe_load((chart_dir(install, upstream, tmp_path_factory.mktemp("z")) / "values.yaml").read_text())  # fmt: skip
    zookeeper = values["clickhouse"]["zookeeper"]
    assert not any(
        d["metadata"]["name"].endswith("zookeeper") for d in docs if d["kind"] == "StatefulSet"
    )
    made.append({
        "kind": "StatefulSet",
        "metadata": {"name": "ZooKeeper (clickhouse chart's subchart)"},
        "spec": {"replicas": zookeeper["replicaCount"],
                 "template": {"spec": {"containers": [{"resources": zookeeper["resources"]}]}}},
    })  # fmt: skip
    signoz = node_pods(
        {"signoz chart": docs, "ClickHouseInstallation": made[:-1], "signoz values": made[-1:]}
    )
    return {"jaeger": jaeger, "signoz": signoz}


@pytest.mark.parametrize("backend", ["jaeger", "signoz"])
def test_each_profile_with_a_tracing_backend(profile, backend_pods, backend):
    name, pods = profile
    tracing = backend_pods[backend]
    every = pods + tracing
    vm = PROFILE_VM[name] + TRACING_VM_EXTRA[backend]
    requests = sum(p.total_request for p in every)
    limits = sum(p.total_limit for p in every)
    own = sum(p.total_request for p in tracing), sum(p.total_limit for p in tracing)
    print(
        f"\n{name} + {backend}: requests {gib(requests)}, limits {gib(limits)} (the backend "
        f"{gib(own[0])} / {gib(own[1])}), VM {gib(vm)}"
    )
    for pod in sorted(tracing, key=lambda p: p.total_request, reverse=True):
        print(
            f"  {pod.name}: {pod.total_request >> 20}Mi / {pod.total_limit >> 20}Mi ({pod.origin})"
        )
    assert budget_problem(name, every, vm - KUBERNETES_RESERVE) == ""
    assert budget_problem(name, every, vm, "limit") == ""
    if backend == "jaeger":  # fits the profile's own VM: laptop stays an 8 GiB Docker
        assert vm == PROFILE_VM[name]
    else:  # SigNoz with ClickHouse does not fit the profile's own VM
        assert budget_problem(name, every, PROFILE_VM[name], "limit") != ""
    # The preflight asks Docker for the requests and Kubernetes' reserve, and passes the VM.
    preflight = role_defaults("preflight")
    threshold = (
        preflight["preflight_docker_memory_gib"][name]
        + preflight["preflight_tracing_memory_gib"][backend]
    ) * GIB
    assert requests + KUBERNETES_RESERVE <= threshold <= 0.96 * vm
    if backend == "jaeger":  # exactly its request: the laptop threshold has no room to spare
        assert preflight["preflight_tracing_memory_gib"]["jaeger"] * GIB == own[0]
