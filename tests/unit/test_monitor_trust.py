"""The monitor's NetworkPolicy peers against the upstream release files (docs/monitoring.md,
"Trust boundaries"); the rendered policy itself is checked in tests/cluster/test_monitor_trust.py."""

from __future__ import annotations

import yaml

from tests.support.manifests import documents
from tests.support.paths import KNATIVE_RELEASE, ROOT

ROLE = ROOT / "ansible" / "roles" / "income_monitor"


def test_the_event_senders_are_the_pods_knatives_broker_filter_runs():
    # The policy's peers must select the pods that deliver Trigger events: in Knative Eventing
    # 1.21's release (tests/data/knative-release, byte-identical assets) the mt-broker-filter
    # Deployment in knative-eventing; a label that no pod carries would shut the events out.
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yaml").read_text())
    filters = [
        d
        for d in documents(KNATIVE_RELEASE / "mt-channel-broker.yaml")
        if d.get("kind") == "Deployment" and d["metadata"]["name"] == "mt-broker-filter"
    ]
    (deployment,) = filters
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for peer in defaults["income_monitor_event_senders"]:
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        assert namespace == deployment["metadata"]["namespace"]
        assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
