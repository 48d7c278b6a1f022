"""The simulated cluster itself: a real kube-apiserver and etcd of the node image's release,
the stock controllers, kwok's simulated kubelets (no container runs), and a clean stop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from income_bundle_dev import simcluster
from income_bundle_dev.simcluster import SimCluster, SimClusterError
from tests.support.paths import ROOT

pytestmark = pytest.mark.skipif(
    simcluster.unavailable_reason() is not None, reason=str(simcluster.unavailable_reason())
)


@pytest.fixture
def cluster(sim_cluster):
    return sim_cluster


def test_go_mod_pins_the_release_the_harness_names():
    if shutil.which("go") is None:
        pytest.skip("reading dev/sim-cluster/go.mod needs Go (go mod edit -json)")
    module = json.loads(
        subprocess.run(
            ["go", "mod", "edit", "-json"],
            cwd=ROOT / simcluster.GO_MODULE_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    required = {item["Path"]: item["Version"] for item in module["Require"]}
    assert required["k8s.io/kubernetes"] == simcluster.KUBERNETES_VERSION
    assert required["go.etcd.io/etcd/server/v3"] == simcluster.ETCD_VERSION
    staging_version = "v0" + simcluster.KUBERNETES_VERSION.removeprefix("v1")
    replaced = {item["Old"]["Path"]: item["New"] for item in module["Replace"]}
    assert replaced, "k8s.io/kubernetes' staging modules must be pinned by replace lines"
    for path, new in replaced.items():
        assert new == {"Path": path, "Version": staging_version}, path


def test_api_server_is_the_release_of_the_kind_node_image(cluster):
    defaults = yaml.safe_load((ROOT / "ansible/roles/kind_cluster/defaults/main.yaml").read_text())
    node_tag = defaults["kind_cluster_node_image"].split(":", 1)[1].split("@")[0]
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == simcluster.KUBERNETES_VERSION == node_tag
    client = json.loads(cluster.kubectl("version", "--client", "-o", "json").stdout)
    assert client["clientVersion"]["gitVersion"] == simcluster.KUBERNETES_VERSION


def test_deployment_pods_are_scheduled_and_run_on_simulated_nodes(cluster):
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {
                    "containers": [{"name": "probe", "image": "never-pulled.invalid/probe:1"}]
                },
            },
        },
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(deployment))
    # deployment controller -> ReplicaSet -> pods -> scheduler -> kwok: the wait a role would use.
    cluster.kubectl(
        "wait", "deployment/probe", "--for=condition=Available", "--timeout=180s", timeout_s=200
    )
    pods = cluster.get_json("pods", "-l", "app=probe")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith(simcluster.NODE_NAME)
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["podIP"]
    cluster.kubectl("delete", "deployment/probe", "--wait=true")
    cluster.wait_for(
        "garbage collection removes the probe pods",
        lambda: not cluster.get_json("pods", "-l", "app=probe")["items"],
    )


def test_api_server_rejects_what_a_real_one_rejects(cluster):
    # An immutable field: a Deployment's selector cannot change (apps/v1 validation).
    base = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "immutable", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "one"}},
            "template": {
                "metadata": {"labels": {"app": "one"}},
                "spec": {"containers": [{"name": "c", "image": "never-pulled.invalid/c:1"}]},
            },
        },
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(base))
    changed = json.loads(json.dumps(base))
    changed["spec"]["selector"]["matchLabels"]["app"] = "two"
    changed["spec"]["template"]["metadata"]["labels"]["app"] = "two"
    result = cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=json.dumps(changed), check=False
    )
    assert result.returncode != 0
    assert "field is immutable" in result.stderr
    # Strict field validation: an unknown field is refused, not dropped.
    typo = json.loads(json.dumps(base))
    typo["spec"]["replica"] = 1
    result = cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=json.dumps(typo), check=False
    )
    assert result.returncode != 0
    assert ".spec.replica: field not declared in schema" in result.stderr
    cluster.kubectl("delete", "deployment/immutable")


class _RecordingSimCluster(SimCluster):
    """Remembers what it started, to check that stop leaves nothing behind."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.started: list[tuple[str, int]] = []
        self.workdirs: list[Path] = []

    def _spawn(self, name, args):
        process = super()._spawn(name, args)
        self.started.append((name, process.pid))
        if self.workdir not in self.workdirs:
            self.workdirs.append(self.workdir)
        return process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_leaves_no_process_and_no_file():
    recording = _RecordingSimCluster()
    with recording:
        assert recording.kubeconfig.is_file()
    assert {name for name, _ in recording.started} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }
    assert not [name for name, pid in recording.started if _alive(pid)]
    assert recording.workdirs and not any(path.exists() for path in recording.workdirs)


def test_failed_start_leaves_no_process_and_no_file():
    # Nothing is healthy within a millisecond: starting fails after etcd was spawned, and
    # everything is cleaned up anyway.
    recording = _RecordingSimCluster(ready_timeout_s=0.001)
    with pytest.raises(SimClusterError, match="not ready within"), recording:
        pass
    assert recording.started
    assert not [name for name, pid in recording.started if _alive(pid)]
    assert recording.workdirs and not any(path.exists() for path in recording.workdirs)
