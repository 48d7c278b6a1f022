"""The slim MLServer images of both cluster paths: python:3.11-slim by its multi-platform index
digest, MLServer 1.7.1 and exactly constraints.txt's libraries (seldon_core's
mlserver.Dockerfile.j2, kserve_stack's kserve-mlserver.Dockerfile.j2).

Docker cannot run here, so the image is checked in parts: its pins are the closure of what the
model folders import at constraints.txt's versions; a fresh venv holding exactly those pins,
installed as the Dockerfile installs them (wheels only, no resolution, `pip check`;
tests/support/image_venv.py, cached), serves every model folder through MLServer, started as the
image starts it with the environment Seldon's ServerConfig (or kserve/) gives the container, the
folders' integrity and version check passing at load; every pin has a wheel for linux/arm64 and
for linux/amd64 (PyPI's JSON API), whose sizes give the images' expected size in
docs/cluster-path.md. What the venv cannot show: the operating system's libraries, which the
Dockerfile adds by name (libGL and GLib for opencv-python).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
import yaml

from income_bundle.kserve.manifests import local_detector
from income_bundle.paths import ARTIFACT_FOLDERS, artifact_dir
from income_bundle.process import ServerProcess, http_ok
from income_bundle.scenarios import v2_request
from income_bundle.server import free_port, stage_repository
from tests.support.ansible_files import role_defaults as defaults
from tests.support.image_venv import IMAGES, ImageVenvError, image_pins, image_venv
from tests.support.kserve_events import logger_event
from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"
DOCKERFILES = {"seldon": "mlserver.Dockerfile", "kserve": "kserve-mlserver.Dockerfile"}
# What the model folders' income_mlserver package imports, by distribution (runtime/models.py,
# runtime/cloudevents.py): MLServer, the stock runtimes its classes extend, alibi for the
# explainer, TensorFlow with Keras 2 for the outlier detector.
ROOTS = {
    "mlserver": "1.7.1",
    "mlserver-sklearn": "1.7.1",
    "mlserver-alibi-detect": "1.6.1",
    "alibi": "0.9.6",
    "alibi-detect": "0.13.0",
    "tensorflow": "2.18.0",
    "tf-keras": "2.18.0",
}
# Extras the images use: alibi-detect's TensorFlow backend (OutlierVAE).
USED_EXTRAS = {"alibi-detect": {"tensorflow"}}
READY_TIMEOUT_S = 300.0


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    return {
        normalized(name): version
        for name, version in re.findall(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M
        )
    }


def pins_of(image: str) -> dict[str, str]:
    return dict(pin.split("==") for pin in image_pins(image))


def dockerfile(rendered: Path, image: str) -> str:
    return (rendered / DOCKERFILES[image]).read_text()


def dockerfile_env(text: str) -> dict[str, str]:
    """The ENV instructions' variables (KEY=value pairs, continued lines joined)."""
    joined = text.replace("\\\n", " ")
    env = {}
    for line in re.findall(r"^ENV (.+)$", joined, re.M):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def dockerfile_cmd(text: str) -> list[str]:
    (cmd,) = re.findall(r"^CMD (\[.+\])$", text, re.M)
    return json.loads(cmd)


def made_venv(image: str) -> Path:
    try:
        return image_venv(image)
    except ImageVenvError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(f"{error} (needs PyPI)")


def image_environment(venv: Path, text: str, home: Path) -> dict[str, str]:
    """What a process of the image sees: the Dockerfile's ENV, its pins first on PATH (as
    /usr/local/bin is in python:3.11-slim), and nothing of this test's environment."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        **dockerfile_env(text),
        "HOME": str(home),
    }


# --- The pins -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_pins_are_constraints_versions_of_the_runtimes_and_their_closure(image):
    listed = image_pins(image)
    assert listed == sorted(set(listed)), "pins are sorted and unique"
    pins = pins_of(image)
    locked = constraints()
    assert {name: locked.get(name) for name in pins} == pins
    assert {name: pins.get(name) for name in ROOTS} == ROOTS

    # Every requirement of every pin (with the extras the pins ask of each other) is pinned: what
    # `pip check` refuses in the image, read here from this venv's metadata at the same versions.
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    extras = {name: set(wanted) for name, wanted in USED_EXTRAS.items()}
    missing, pending = [], list(pins)
    while pending:
        name = pending.pop()
        assert version(name) == pins[name], f"{name}: this venv is not constraints.txt's"
        for text in requires(name) or []:
            requirement = Requirement(text)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra})
                for extra in {""} | extras.get(name, set())
            )
            if not wanted:
                continue
            needed = normalized(requirement.name)
            if needed not in pins:
                missing.append(f"{name} needs {requirement}")
            elif requirement.extras - extras.get(needed, set()):
                extras.setdefault(needed, set()).update(requirement.extras)
                pending.append(needed)  # again, with the extras now wanted
    assert missing == []


def test_kserve_pins_are_seldons_and_the_cloudevents_sdk():
    seldon, kserve = pins_of("seldon"), pins_of("kserve")
    added = {name: kserve[name] for name in set(kserve) - set(seldon)}
    assert added == {"cloudevents": "2.2.0", "deprecation": constraints()["deprecation"]}
    assert {name: kserve[name] for name in seldon} == seldon


def test_the_artifacts_were_built_with_the_images_versions(training_report):
    """The folders' load-time check compares these; a difference would refuse them in the image."""
    for image in IMAGES:
        pins = pins_of(image)
        for name in ARTIFACT_FOLDERS:
            metadata = json.loads((artifact_dir(name) / "metadata.json").read_text())
            built = {normalized(d): v for d, v in metadata["libraries"].items()}
            assert {d: pins.get(d) for d in built} == built, (image, name)


# --- The Dockerfiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_installs_exactly_the_pins_on_the_monitors_multi_platform_base(rendered, image):
    text = dockerfile(rendered, image)
    (base,) = re.findall(r"^FROM (\S+)$", text, re.M)
    # The monitor's base: docker-library/repo-info records this digest as an OCI image index
    # whose platforms include linux/amd64 and linux/arm64 v8 (see the roles' defaults).
    assert base == defaults("income_monitor")["income_monitor_base_image"]
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base)
    installed = re.search(r"pip install (.+?) && \\\s+pip check", text, re.S)
    assert installed, "one pip install of the pins, then pip check"
    flags = [word for word in installed.group(1).split() if word != "\\"]
    assert {"--only-binary=:all:", "--no-deps", "--no-cache-dir"} <= set(flags)
    assert [f for f in flags if "==" in f] == image_pins(image)
    assert "USER 1000" in text


def test_the_image_starts_mlserver_as_seldons_serverconfig_runs_it(rendered, mlserver_container):
    """Seldon's ServerConfig `mlserver` gives the container neither command nor args: the image's
    CMD must start MLServer on MLSERVER_MODELS_DIR, as the uid the pod runs as."""
    container, pod_security = mlserver_container
    assert "command" not in container and "args" not in container
    text = dockerfile(rendered, "seldon")
    cmd = dockerfile_cmd(text)
    assert cmd[:2] == ["/bin/sh", "-c"] and "mlserver start" in cmd[2]
    assert '"$MLSERVER_MODELS_DIR"' in cmd[2]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLSERVER_MODELS_DIR"] == "/mnt/agent/models"
    (user,) = re.findall(r"^USER (\d+)$", text, re.M)
    assert int(user) == pod_security["runAsUser"]
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", text, re.M)
    assert "--uid 1000" in text and f"--home-dir {workdir}" in text


@pytest.fixture(scope="module")
def mlserver_container(rendered) -> tuple[dict, dict]:
    """The mlserver container of the ServerConfig `mlserver` the seldon-core-v2-setup chart
    renders with the roles' values, and the pod's securityContext."""
    from income_bundle_dev.upstream_checks import (
        ChartUnavailableError,
        chart_dir,
        chart_installs,
        find_helm,
        find_upstream_dir,
        helm_template,
        node_kubernetes_version,
    )

    helm = find_helm()
    if helm is None:
        pytest.skip("helm not found (.ci/run builds it)")
    (setup,) = [i for i in chart_installs(ROLES, rendered) if i.chart == "seldon-core-v2-setup"]
    work = Path(rendered).parent / "charts"
    work.mkdir(exist_ok=True)
    try:
        directory = chart_dir(setup, find_upstream_dir(ROOT), work)
    except ChartUnavailableError as error:
        pytest.skip(f"pinned chart unavailable: {error}")
    version = ".".join(str(part) for part in node_kubernetes_version(ROLES))
    (config,) = [
        d
        for d in helm_template(helm, directory, setup, version)
        if d["kind"] == "ServerConfig" and d["metadata"]["name"] == "mlserver"
    ]
    pod = config["spec"]["podSpec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "mlserver"]
    return container, pod["securityContext"]


# --- Serving every artifact with exactly the pins ---------------------------------------------


class Served:
    """One MLServer of an image's venv, started as the image starts it."""

    def __init__(self, name: str, command: list[str], env: dict, cwd: Path, log: Path):
        self.http_port = int(env["MLSERVER_HTTP_PORT"])
        self.url = f"http://127.0.0.1:{self.http_port}"
        started = time.monotonic()
        self.process = ServerProcess(name, command, log, env=env, cwd=cwd)
        self.process.wait_until(
            lambda: http_ok(f"{self.url}/v2/health/live"), READY_TIMEOUT_S, ImageVenvError
        )
        self.start_s = time.monotonic() - started

    def stop(self) -> None:
        self.process.stop()


def _loopback_ports(env: dict) -> dict:
    """The container's ports moved to free loopback ports (the pod's network is its own)."""
    return {
        **env,
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(free_port()),
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
    }


def _tampered_copy(tmp: Path) -> Path:
    """The classifier's folder as if built with another scikit-learn: the check must refuse it."""
    folder = tmp / "income-other-sklearn"
    shutil.copytree(artifact_dir("income"), folder, symlinks=True)
    settings = json.loads((folder / "model-settings.json").read_text())
    (folder / "model-settings.json").write_text(json.dumps({**settings, "name": folder.name}))
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["libraries"]["scikit-learn"] = "1.4.2"
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


@pytest.fixture(scope="module")
def seldon_server(rendered, mlserver_container, training_report, tmp_path_factory):
    """The Seldon image's venv running the image's CMD with the ServerConfig's environment, every
    model folder (and a tampered one) in MLSERVER_MODELS_DIR, none loaded at start: the agent
    loads each through MLServer's repository API, as this does."""
    venv = made_venv("seldon")
    tmp = tmp_path_factory.mktemp("seldon-image")
    text = dockerfile(rendered, "seldon")
    container, _ = mlserver_container
    models_dir = tmp / "mnt" / "agent" / "models"
    folders = {name: artifact_dir(name) for name in ARTIFACT_FOLDERS}
    folders["income-other-sklearn"] = _tampered_copy(tmp)
    stage_repository(models_dir, folders)
    server_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert server_env["MLSERVER_LOAD_MODELS_AT_STARTUP"] == "false"
    env = _loopback_ports(
        {**image_environment(venv, text, tmp / "home"), **server_env,
         "MLSERVER_MODELS_DIR": str(models_dir)}
    )  # fmt: skip
    workdir = tmp / "opt-mlserver"  # the image's WORKDIR, the user's own
    workdir.mkdir()
    server = Served(
        "slim MLServer (Seldon)", dockerfile_cmd(text), env, workdir, tmp / "mlserver.log"
    )
    try:
        loads = {}
        for name in folders:
            started = time.monotonic()
            answer = requests.post(f"{server.url}/v2/repository/models/{name}/load", timeout=300)
            loads[name] = (answer.status_code, answer.text, time.monotonic() - started)
        yield server, loads
    finally:
        server.stop()


def _outputs(answer: requests.Response) -> dict[str, dict]:
    assert answer.status_code == 200, answer.text
    return {o["name"]: o for o in answer.json()["outputs"]}


def _declared(name: str) -> list[dict]:
    return json.loads((artifact_dir(name) / "model-settings.json").read_text())["outputs"]


def _answers_as_declared(url: str, name: str, body: dict) -> dict[str, dict]:
    outputs = _outputs(requests.post(f"{url}/v2/models/{name}/infer", json=body, timeout=120))
    declared = _declared(name)
    assert sorted(outputs) == sorted(d["name"] for d in declared), name
    for d in declared:
        assert outputs[d["name"]]["datatype"] == d["datatype"], (name, d["name"])
        assert len(outputs[d["name"]]["shape"]) == len(d["shape"]), (name, d["name"])
    return outputs


def test_seldon_image_loads_every_model_folder_as_the_agent_does(seldon_server):
    server, loads = seldon_server
    refused = {n: (status, text) for n, (status, text, _) in loads.items() if status != 200}
    assert set(refused) == {"income-other-sklearn"}, refused
    for name in ARTIFACT_FOLDERS:
        assert http_ok(f"{server.url}/v2/models/{name}/ready"), name
    print({n: f"{s:.1f} s" for n, (_, _, s) in loads.items()}, f"start {server.start_s:.1f} s")


def test_seldon_image_refuses_a_folder_built_with_other_versions(seldon_server):
    """The integrity and version check runs at load in the image's venv, and can refuse."""
    _, loads = seldon_server
    status, text, _ = loads["income-other-sklearn"]
    assert status >= 400 and "scikit-learn 1.5.2 (built with 1.4.2" in text, text


def test_seldon_image_answers_every_model(seldon_server, scenario):
    server, _ = seldon_server
    X = scenario["reference"].X[:20]
    outputs = _answers_as_declared(server.url, "income", v2_request(X))
    # The classifier's answers are this venv's own scikit-learn's on the same artifact.
    expected = joblib.load(artifact_dir("income") / "model.joblib").predict(X.astype(np.float32))
    assert outputs["predict"]["data"] == [int(v) for v in expected]
    transformed = _answers_as_declared(server.url, "income-preprocess", v2_request(X))["transform"]
    assert transformed["shape"] == [20, 57]
    _answers_as_declared(server.url, "income-drift", v2_request(X))
    outlier = {"inputs": [{**transformed, "name": "transform"}]}
    _answers_as_declared(server.url, "income-outlier", outlier)
    _answers_as_declared(server.url, "income-explainer", v2_request(X[:1]))
    iris = json.loads((ROOT / "data" / "scenarios" / "iris.json").read_text())
    assert len(_answers_as_declared(server.url, "iris", iris)["predict"]["data"]) == 3


# --- The KServe image: the classifier's ServingRuntime and the detectors' Knative Services ---------


@pytest.fixture(scope="module")
def kserve_servers(rendered, training_report, tmp_path_factory):
    """The KServe image's venv running each container as kserve/ starts it: the classifier's
    ServingRuntime (`mlserver start /mnt/models`, the InferenceService's folder mounted there) and
    each detector's Knative Service (its folder, PYTHONPATH and worker count)."""
    venv = made_venv("kserve")
    tmp = tmp_path_factory.mktemp("kserve-image")
    text = dockerfile(rendered, "kserve")
    (runtime,) = yaml.safe_load((ROOT / "kserve" / "servingruntime.yaml").read_text())["spec"][
        "containers"
    ]
    assert runtime["command"] == ["mlserver", "start", "/mnt/models"]
    base = image_environment(venv, text, tmp / "home")
    servers = {}
    try:
        classifier_env = {**base, **{e["name"]: e["value"] for e in runtime["env"]}}
        workdir = tmp / "classifier"
        workdir.mkdir()
        servers["income"] = Served(
            "slim MLServer (KServe income)",
            ["mlserver", "start", str(artifact_dir("income"))],
            _loopback_ports(classifier_env), workdir, tmp / "income.log",
        )  # fmt: skip
        for name in ("income-drift", "income-outlier"):
            detector = local_detector(name)
            env = {**base, **detector.env,
                   "MLSERVER_PARALLEL_WORKERS": str(detector.parallel_workers)}  # fmt: skip
            workdir = tmp / name
            workdir.mkdir()
            servers[name] = Served(
                f"slim MLServer (KServe {name})",
                ["mlserver", "start", str(detector.folder)],
                _loopback_ports(env), workdir, tmp / f"{name}.log",
            )  # fmt: skip
        for name, server in servers.items():
            server.process.wait_until(
                lambda s=server, n=name: http_ok(f"{s.url}/v2/models/{n}/ready"),
                READY_TIMEOUT_S,
                ImageVenvError,
            )
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def test_kserve_image_serves_the_classifier_as_the_serving_runtime_runs_it(
    kserve_servers, scenario
):
    X = scenario["reference"].X[:20]
    outputs = _answers_as_declared(kserve_servers["income"].url, "income", v2_request(X))
    expected = joblib.load(artifact_dir("income") / "model.joblib").predict(X.astype(np.float32))
    assert outputs["predict"]["data"] == [int(v) for v in expected]


def test_kserve_image_runs_the_detectors_cloudevents_routes(kserve_servers, scenario):
    drift = f"{kserve_servers['income-drift'].url}/cloudevents/income-drift"
    rows = scenario["reference"].X[:20]
    for start in range(0, 20, 5):
        body = v2_request(rows[start : start + 5])
        reply = requests.post(drift, timeout=60, **_posted(f"slim-{start}", body))
        assert reply.status_code in (200, 202), reply.text
    state = requests.get(f"{drift}/state", timeout=10).json()
    assert state["rows_held"] == 0 and state["batch_size"] == 20  # the batch of 20 was tested
    outlier = f"{kserve_servers['income-outlier'].url}/cloudevents/income-outlier"
    rows = scenario["outliers"].X[:40]
    replies = [
        requests.post(outlier, timeout=60, **_posted(f"slim-o{i}", v2_request(rows[i : i + 5])))
        for i in range(0, 40, 5)
    ]
    assert all(r.status_code in (200, 202) for r in replies), [r.text for r in replies]
    assert any(r.status_code == 200 for r in replies), "no outlier event on the outlier rows"


def _posted(event_id: str, body: dict) -> dict:
    headers, data = logger_event("org.kubeflow.serving.inference.request", event_id, body)
    return {"headers": headers, "data": data}


# --- Wheels for both platforms, and the images' expected size ---------------------------------


@pytest.fixture(scope="module")
def wheels() -> dict[str, dict]:
    """image -> pin -> platform -> the wheel pip takes there (PyPI's JSON API)."""
    from tests.support.image_wheels import PyPIUnreachableError, chosen_wheels

    try:
        return {image: chosen_wheels(image_pins(image)) for image in IMAGES}
    except PyPIUnreachableError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PyPI unreachable: {error}")
        pytest.skip(f"PyPI unreachable: {error}")


def test_the_platform_tags_tell_an_arm64_wheel_from_an_amd64_one():
    from packaging.utils import parse_wheel_filename

    from tests.support.image_wheels import platform_tags

    def fits(filename: str, arch: str) -> bool:
        return bool(set(parse_wheel_filename(filename)[3]) & set(platform_tags(arch)))

    amd64 = "tensorflow-2.18.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    arm64 = "tensorflow-2.18.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
    assert fits(amd64, "amd64") and not fits(amd64, "arm64")
    assert fits(arm64, "arm64") and not fits(arm64, "amd64")
    assert not fits("tensorflow-2.18.0-cp311-cp311-macosx_12_0_arm64.whl", "arm64")
    assert not fits("numpy-2.3.0-cp311-cp311-manylinux_2_39_aarch64.whl", "arm64")  # newer glibc
    assert fits("six-1.17.0-py2.py3-none-any.whl", "arm64")


def test_every_pin_has_a_wheel_for_linux_arm64_and_amd64(wheels):
    missing = [
        f"{image}: {pin} has no wheel for CPython 3.11 on linux/{arch}"
        for image, chosen in wheels.items()
        for pin, by_arch in chosen.items()
        for arch, wheel in by_arch.items()
        if wheel is None
    ]
    assert missing == []


def test_the_docs_state_the_images_expected_sizes(wheels):
    from tests.support.image_wheels import size_table

    docs = (ROOT / "docs" / "cluster-path.md").read_text()
    rows = size_table({image: image_pins(image) for image in IMAGES})
    missing = [row for row in rows if row not in docs.splitlines()]
    assert missing == [], "docs/cluster-path.md: python -m tests.support.image_wheels prints them"
