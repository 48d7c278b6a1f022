"""The images a first run of the Seldon path (`make cluster`: setup-ecosystem, setup-seldon,
deploy-income) pulls or builds, derived from what it applies, so the list in docs/cluster-path.md
("Images a first run pulls") cannot go stale.

Every chart is rendered with the roles' values (`helm template` of the pinned charts, hooks
included) and every role template by Ansible; the images are those of the pods the controllers
make from them, as tests/support/memory_budget.py counts those pods: Deployments, StatefulSets,
DaemonSets and Jobs; Seldon's runtime components (the SeldonConfig's, less those the
SeldonRuntime disables); each Server (its ServerConfig's containers with the Server's own merged
over them by name: the income Server runs the slim MLServer image, not seldonio/mlserver);
Strimzi's Kafka node (the operator's STRIMZI_KAFKA_IMAGES entry for the Kafka's version);
prometheus-operator's Prometheus and Alertmanager (their spec.image, and the config reloader the
operator adds, its --prometheus-config-reloader argument). Plus kind's node image and the base
of the images the roles build.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from income_bundle_dev.upstream_checks import chart_dir, chart_installs, helm_template
from tests.cluster.test_upstream_charts import NODE_VERSION, helm, upstream  # noqa: F401
from tests.support.ansible_files import role_defaults
from tests.support.memory_budget import _merge_containers
from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"
SELDON_PATH_ROLES = ("ecosystem", "seldon_core")
SELDON_PATH_TEMPLATES = ("kafka.yaml", "server.yaml", "income-monitor-seldon.yaml")
# The images the roles build here (tagged by their contents), named without their tags.
BUILT = {"income-mlserver", "income-monitor"}


def _pod_images(spec: dict) -> list[str]:
    return [
        c["image"]
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
        if c.get("image")
    ]


def first_run_images(objects: dict[str, list[dict]]) -> dict[str, set[str]]:
    """image -> the origins (chart or template) whose pods run it."""
    every = [(origin, d) for origin, docs in objects.items() for d in docs]
    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for origin, doc in every:
        by_kind.setdefault(doc["kind"], []).append((origin, doc))
    found: dict[str, set[str]] = {}

    def add(origin: str, images: list[str]) -> None:
        for image in images:
            found.setdefault(image, set()).add(origin)

    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        for origin, doc in by_kind.get(kind, []):
            if kind != "Job" and int(doc["spec"].get("replicas", 1)) == 0:
                continue
            add(origin, _pod_images(doc["spec"]["template"]["spec"]))
    disabled = {
        override["name"]
        for _, runtime in by_kind.get("SeldonRuntime", [])
        for override in runtime["spec"].get("overrides") or []
        if override.get("disable")
    }
    for origin, config in by_kind.get("SeldonConfig", []):
        for component in config["spec"]["components"]:
            if component["name"] not in disabled:
                add(origin, _pod_images(component["podSpec"]))
    configs = {doc["metadata"]["name"]: doc for _, doc in by_kind.get("ServerConfig", [])}
    for origin, server in by_kind.get("Server", []):
        if int(server["spec"].get("replicas", 1)) == 0:
            continue
        config = configs[server["spec"]["serverConfig"]]["spec"]["podSpec"]
        own = (server["spec"].get("podSpec") or {}).get("containers") or []
        add(
            origin,
            _pod_images({**config, "containers": _merge_containers(config["containers"], own)}),
        )
    operator_env = {
        e["name"]: e.get("value", "")
        for _, doc in by_kind.get("Deployment", [])
        for c in doc["spec"]["template"]["spec"]["containers"]
        for e in c.get("env") or []
    }
    kafka_images = dict(
        line.strip().split("=", 1)
        for line in operator_env.get("STRIMZI_KAFKA_IMAGES", "").splitlines()
        if "=" in line
    )
    for origin, kafka in by_kind.get("Kafka", []):
        add(origin, [kafka_images[kafka["spec"]["kafka"]["version"]]])
    reloader = [
        arg.split("=", 1)[1]
        for _, doc in by_kind.get("Deployment", [])
        for c in doc["spec"]["template"]["spec"]["containers"]
        for arg in c.get("args") or []
        if arg.startswith("--prometheus-config-reloader=")
    ]
    for kind in ("Prometheus", "Alertmanager"):
        for origin, doc in by_kind.get(kind, []):
            add(origin, [doc["spec"]["image"], *reloader])
    return found


@pytest.fixture(scope="module")
def images(rendered, helm, upstream, tmp_path_factory) -> dict[str, set[str]]:  # noqa: F811
    work = tmp_path_factory.mktemp("first-run")
    installs = [i for i in chart_installs(ROLES, rendered) if i.role in SELDON_PATH_ROLES]
    objects = {
        f"{i.chart} chart": helm_template(helm, chart_dir(i, upstream, work), i, NODE_VERSION)
        for i in installs
    }
    for name in SELDON_PATH_TEMPLATES:
        objects[f"{name} template"] = [
            d for d in yaml.safe_load_all((Path(rendered) / name).read_text()) if d
        ]
    found = first_run_images(objects)
    found.setdefault(role_defaults("kind_cluster")["kind_cluster_node_image"], set()).add("kind")
    base = role_defaults("seldon_core")["seldon_core_mlserver_base_image"]
    found.setdefault(base, set()).add("the built images' base")
    return found


def _documented() -> set[str]:
    """The images the docs' table lists (its first column, in backticks)."""
    text = (ROOT / "docs" / "cluster-path.md").read_text()
    section = text.split("### Images a first run pulls", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.M))


def test_the_docs_list_every_image_a_first_run_pulls(images):
    pulled = {image for image in images if image.split(":")[0] not in BUILT}
    built = {image.split(":")[0] for image in images} & BUILT
    assert built == BUILT, "the Server and the monitor run the images the roles build"
    print(
        "\n".join(
            f"{image}  <- {', '.join(sorted(origins))}" for image, origins in sorted(images.items())
        )
    )
    documented = _documented()
    assert sorted(pulled - documented) == [], "pulled but not in docs/cluster-path.md"
    assert sorted(documented - pulled) == [], "in docs/cluster-path.md but not pulled"


def test_the_stock_mlserver_image_is_not_pulled(images):
    """The ServerConfig names seldonio/mlserver:1.7.1 (amd64 only, several GB); the income Server
    overrides it with the slim image, and no other Server runs (Triton off)."""
    assert not [image for image in images if image.startswith("docker.io/seldonio/mlserver")]
