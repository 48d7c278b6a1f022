"""The monitor's trust boundary in the clusters (docs/monitoring.md, "Trust boundaries"): the
feedback token comes from a Secret created once and mounted where --token-file points, and a
NetworkPolicy admits to the monitor's port only Prometheus and, on the KServe path, the broker."""

from __future__ import annotations

import yaml

from tests.cluster.test_monitor_deploy import PLATFORMS, ROLE, arguments, container, one
from tests.support.manifests import documents


def statefulset(rendered, platform: str) -> dict:
    return one(documents(rendered / f"income-monitor-{platform}.yaml"), "StatefulSet")


def test_the_token_file_is_the_mounted_secrets_key(rendered):
    secret = one(documents(rendered / "income-monitor-token.yaml"), "Secret")
    (key,) = secret["stringData"]
    assert len(secret["stringData"][key]) >= 32
    # Rendered once, with the Seldon path's namespace: the StatefulSet's there.
    assert (
        secret["metadata"]["namespace"] == statefulset(rendered, "seldon")["metadata"]["namespace"]
    )
    for platform in PLATFORMS:
        pod = statefulset(rendered, platform)["spec"]["template"]["spec"]
        found = container(rendered, platform)
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == secret["metadata"]["name"]
        (mount,) = [m for m in found["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        assert arguments(found)["token-file"] == f"{mount['mountPath']}/{key}"


def test_the_secret_is_created_only_when_missing():
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yaml").read_text())
    (look,) = [t for t in tasks if t.get("kubernetes.core.k8s_info", {}).get("kind") == "Secret"]
    (create,) = [
        t for t in tasks if "income-monitor-token.yaml.j2" in str(t.get("kubernetes.core.k8s"))
    ]
    assert create["when"] == f"{look['register']}.resources | length == 0"
    assert look["no_log"] and create["no_log"]  # the token never reaches the log


def test_the_network_policy_admits_only_scrapers_and_on_kserve_the_broker(rendered):
    for platform in PLATFORMS:
        policy = one(
            documents(rendered / f"income-monitor-networkpolicy-{platform}.yaml"), "NetworkPolicy"
        )
        workload = statefulset(rendered, platform)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selected = policy["spec"]["podSelector"]["matchLabels"]
        assert selected.items() <= labels.items()
        assert policy["metadata"]["namespace"] == workload["metadata"]["namespace"]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        ports = {p["name"] for p in container(rendered, platform)["ports"]}
        assert [p["port"] for p in rule["ports"]] == ["http"] and "http" in ports
        namespaces = {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for peer in rule["from"]
        }
        expected = {"monitoring", "knative-eventing"} if platform == "kserve" else {"monitoring"}
        assert namespaces == expected
