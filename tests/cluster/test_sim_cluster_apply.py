"""Every object the bundle applies, server-side applied to a real kube-apiserver of the node
image's release (the simulated cluster): accepted, and applied again, nothing changes.

CRDs come from the pinned upstream sources (`../shared/upstream/crds`, see its README), so
the API server checks our objects against the structural schemas, defaults and CEL rules of
the versions we pin. No operator runs: this is what the API server decides, not what a
controller would do afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from income_bundle_dev import simcluster
from income_bundle_dev.simcluster import SimCluster
from tests.support.paths import ROOT

UPSTREAM = ROOT.parent / "shared" / "upstream"
FIELD_MANAGER = "income-bundle"
# Where the income_pipeline role applies the namespace-less Seldon manifests
# (ansible/roles/income_pipeline: `namespace: "{{ income_pipeline_namespace }}"`).
SELDON_NAMESPACE = yaml.safe_load(
    (ROOT / "ansible/roles/income_pipeline/defaults/main.yaml").read_text()
)["income_pipeline_namespace"]
# Namespaces our objects live in that the bundle does not create itself, and who does.
CREATED_BY_OTHERS = {
    "knative-serving": "Knative Serving's release manifests (kserve_stack role)",
}
# Rendered role templates that are not Kubernetes objects for the API server.
NOT_OBJECTS = {"kind-config.yaml", "kube-prometheus-stack-values.yaml", "kserve-values.yaml"}

pytestmark = [
    pytest.mark.skipif(
        simcluster.unavailable_reason() is not None, reason=str(simcluster.unavailable_reason())
    ),
    pytest.mark.skipif(
        not (UPSTREAM / "crds").is_dir(),
        reason=f"the pinned upstream CRDs are not beside the checkout ({UPSTREAM / 'crds'})",
    ),
]


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _bundle_objects(rendered: Path) -> dict[str, list[dict]]:
    """Source file -> the objects in it, namespaced the way the roles apply them."""
    sources = {}
    for path in sorted((ROOT / "seldon-examples").rglob("*.yaml")):
        docs = _documents(path)
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("namespace", SELDON_NAMESPACE)
        sources[str(path.relative_to(ROOT))] = docs
    for path in sorted((ROOT / "kserve").glob("*.yaml")):
        sources[str(path.relative_to(ROOT))] = _documents(path)
    for path in sorted(rendered.glob("*.yaml")):
        if path.name not in NOT_OBJECTS:
            sources[f"rendered role template {path.name}"] = _documents(path)
    return sources


def _key(obj: dict) -> tuple[str, str, str]:
    metadata = obj["metadata"]
    return (obj["kind"], metadata.get("namespace", ""), metadata["name"])


def _apply(cluster: SimCluster, docs: list[dict]) -> str:
    return cluster.server_side_apply(docs, field_manager=FIELD_MANAGER)


def _stored(cluster: SimCluster, docs: list[dict]) -> dict[tuple[str, str, str], dict]:
    answer = json.loads(
        cluster.kubectl(
            "get", "--show-managed-fields", "-f", "-", "-o", "json", input=yaml.safe_dump_all(docs)
        ).stdout
    )
    items = answer["items"] if answer.get("kind") == "List" else [answer]
    return {_key(item): item for item in items}


def _applied_by_us(obj: dict) -> list[dict]:
    return [
        entry
        for entry in obj["metadata"].get("managedFields", [])
        if entry["manager"] == FIELD_MANAGER and entry["operation"] == "Apply"
    ]


@pytest.fixture(scope="module")
def cluster(sim_cluster):
    sim_cluster.install_crds(sorted((UPSTREAM / "crds").glob("*.yaml")))
    return sim_cluster


def test_every_object_is_accepted_and_a_second_apply_changes_nothing(cluster, rendered):
    sources = _bundle_objects(rendered)
    every = [doc for docs in sources.values() for doc in docs]
    created = {doc["metadata"]["name"] for doc in every if doc["kind"] == "Namespace"}
    wanted = {doc["metadata"].get("namespace") for doc in every} - {None} - created
    assert wanted == set(CREATED_BY_OTHERS), (
        "objects live in namespaces nobody creates: "
        + ", ".join(sorted(wanted - set(CREATED_BY_OTHERS)))
    )
    namespaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in wanted
    ]
    assert not _apply(cluster, namespaces)

    # Namespaces first (as the roles do), then everything else, file by file so a refusal
    # names its source.
    ordered = sorted(
        sources.items(), key=lambda item: not any(d["kind"] == "Namespace" for d in item[1])
    )
    refusals = {source: _apply(cluster, docs) for source, docs in ordered}
    refused = {source: text for source, text in refusals.items() if text}
    assert not refused, "\n".join(f"{source}: {text}" for source, text in refused.items())

    # Controllers go on writing status (a PVC binds, a Deployment's pods come up), so the
    # question is what our applies change: kubectl diff sees nothing to do, and our manager's
    # record of what it applied stays as it was.
    stored = _stored(cluster, every)
    assert set(stored) == {_key(doc) for doc in every}
    for source, docs in ordered:
        diff = cluster.kubectl(
            "diff", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-",
            input=yaml.safe_dump_all(docs), check=False,
        )  # fmt: skip
        assert diff.returncode == 0, (
            f"{source}: a second apply would change\n{diff.stdout}{diff.stderr}"
        )
    before = {key: _applied_by_us(obj) for key, obj in stored.items()}
    for source, docs in ordered:
        assert not _apply(cluster, docs), source
    after = {key: _applied_by_us(obj) for key, obj in _stored(cluster, every).items()}
    assert all(before.values()), "every object carries our field manager's apply record"
    changed = sorted(key for key in before if before[key] != after[key])
    assert not changed, f"a second server-side apply changed {changed}"


def test_an_object_the_schema_refuses_is_refused_naming_the_field(cluster, rendered):
    # The same path catches a typo in a CRD-backed object: a strict API server refuses it.
    model = _documents(ROOT / "seldon-examples/models/income.yaml")[0]
    model["metadata"]["namespace"] = SELDON_NAMESPACE
    model["spec"]["storageURI"] = model["spec"].pop("storageUri")
    cluster.kubectl("create", "namespace", SELDON_NAMESPACE, check=False)
    refusal = _apply(cluster, [model])
    assert ".spec.storageURI: field not declared in schema" in refusal, refusal


def test_the_second_apply_check_sees_a_change(cluster):
    # The idempotence check above is only worth something if it notices a change.
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "idempotence-probe", "namespace": "default"},
        "data": {"value": "one"},
    }
    assert not _apply(cluster, [config_map])
    config_map["data"]["value"] = "two"
    diff = cluster.kubectl(
        "diff", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-",
        input=yaml.safe_dump_all([config_map]), check=False,
    )  # fmt: skip
    assert diff.returncode == 1, diff.stderr
    assert "-  value: one" in diff.stdout and "+  value: two" in diff.stdout
    cluster.kubectl("delete", "configmap", "idempotence-probe")


# Admission webhooks point at Services whose pods never run here; installed, they would refuse
# every later write of their kinds. The API server validates them (dry run) without keeping them.
WEBHOOK_KINDS = {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
# Helm hooks `helm install` never creates (only `helm test` does).
TEST_HOOKS = {"test", "test-success", "test-failure"}


def _without_nulls(value):
    """What the API server keeps of a create: `helm install` POSTs, and null fields the schema
    does not mark nullable are pruned; server-side apply refuses them instead. Upstream charts
    render such nulls (seldon-core-v2-setup's SeldonConfig `labels: null`)."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _is_test_hook(doc: dict) -> bool:
    hooks = (doc["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
    return bool(TEST_HOOKS & {hook.strip() for hook in hooks.split(",")})


def test_every_chart_with_our_values_is_accepted_and_a_second_apply_changes_nothing(
    cluster, rendered, tmp_path
):
    from income_bundle_dev.upstream_checks import (
        HELM_VERSION,
        ChartUnavailableError,
        chart_dir,
        chart_installs,
        find_helm,
        find_upstream_dir,
        helm_cache_dir,
        helm_template,
    )

    helm = find_helm()
    if helm is None:
        pytest.skip(
            f"helm not on PATH or in {helm_cache_dir()}/bin (.ci/run builds helm {HELM_VERSION})"
        )
    installs, seen = [], set()
    for install in chart_installs(ROOT / "ansible" / "roles", rendered):
        # cert-manager is installed by both paths with the same release: one cluster, one copy.
        if (install.release, install.namespace) not in seen:
            seen.add((install.release, install.namespace))
            installs.append(install)
    try:
        charts = {
            install.release: helm_template(
                helm,
                chart_dir(install, find_upstream_dir(ROOT), tmp_path),
                install,
                simcluster.KUBERNETES_VERSION,
            )
            for install in installs
        }
    except ChartUnavailableError as error:
        pytest.skip(f"pinned chart unavailable: {error}")
    namespaces = {install.namespace for install in installs}
    assert not _apply(
        cluster,
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": str(n)}}
            for n in namespaces
        ],
    )
    by_release = {install.release: install for install in installs}
    crds = [d for docs in charts.values() for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert not _apply(cluster, crds)
    cluster.wait_for_established([crd["metadata"]["name"] for crd in crds])

    cluster_scoped = {
        line.split()[-1]
        for line in cluster.kubectl(
            "api-resources", "--namespaced=false", "--no-headers"
        ).stdout.splitlines()
    }
    applied = {}
    for release, docs in charts.items():
        namespace = str(by_release[release].namespace)
        for doc in docs:  # as helm install does: the release namespace where a template sets none
            if doc["kind"] not in cluster_scoped:
                doc["metadata"].setdefault("namespace", namespace)
        webhooks = [d for d in docs if d["kind"] in WEBHOOK_KINDS]
        rest = [
            _without_nulls(d)
            for d in docs
            if d["kind"] not in WEBHOOK_KINDS | {"CustomResourceDefinition"}
            and not _is_test_hook(d)
        ]
        if not rest:  # a chart of CRDs only (kserve-crd)
            continue
        refusal = _apply(cluster, rest)
        assert not refusal, f"{release}: {refusal}"
        if webhooks:
            refusal = cluster.server_side_apply(webhooks, field_manager=FIELD_MANAGER, dry_run=True)
            assert not refusal, f"{release} webhooks: {refusal}"
        applied[release] = rest

    for release, docs in applied.items():
        diff = cluster.kubectl(
            "diff", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-",
            input=yaml.safe_dump_all(docs), check=False,
        )  # fmt: skip
        assert diff.returncode == 0, f"{release}: a second apply would change\n{diff.stdout}"
