"""The Ansible side of the checkout as the tests read and run it: the roles' defaults, argument
specs and waits, the playbooks, the Kubernetes version objects are validated against, and
`ansible-playbook` run from ansible/ with this venv's tools on PATH."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from income_bundle_dev.upstream_checks import kubernetes_schema_version
from tests.support.paths import ROOT

ANSIBLE = ROOT / "ansible"
ROLES = ANSIBLE / "roles"
BIN = Path(sys.executable).parent
PLAYBOOKS = sorted((ANSIBLE / "playbooks").glob("*.yaml"))
ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if p.is_dir())
KUBERNETES_VERSION = kubernetes_schema_version(ROLES)  # the kind node's minor


def run(args: list[str], cwd: Path = ANSIBLE, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def role_defaults(role: str) -> dict:
    """roles/<role>/defaults/main.yaml."""
    return yaml.safe_load((ROLES / role / "defaults" / "main.yaml").read_text())


def argument_specs() -> dict[str, dict]:
    """Each role's documented variables (meta/argument_specs.yaml, entry point main)."""
    return {
        role: yaml.safe_load((ROLES / role / "meta" / "argument_specs.yaml").read_text())[
            "argument_specs"
        ]["main"]["options"]
        for role in ROLE_NAMES
    }


def role_waits() -> list[tuple[str, str, str]]:
    """(role, kind, condition type) for every kubernetes.core.k8s_info wait in the roles."""
    waits = []

    def visit(role: str, tasks) -> None:
        for task in tasks or []:
            for nested in ("block", "rescue", "always"):
                visit(role, task.get(nested))
            info = task.get("kubernetes.core.k8s_info")
            if not info or "wait_condition" not in info:
                continue
            kinds = [item["kind"] for item in task.get("loop", []) if isinstance(item, dict)]
            if not kinds or "{{" not in str(info.get("kind")):
                kinds = [info["kind"]]
            waits.extend((role, kind, info["wait_condition"]["type"]) for kind in kinds)

    for path in sorted(ROLES.glob("*/tasks/*.yaml")):
        visit(path.parts[-3], yaml.safe_load(path.read_text()))
    return waits


def image_pins(dockerfile: str) -> dict[str, str]:
    """The Dockerfile's pip pins, after checking each equals constraints.txt's (the lock, which
    holds requirements.txt's pins and their closure)."""
    pins = dict(re.findall(r"\s([a-z0-9][a-z0-9.\-]*)==(\S+)", dockerfile))
    locked = {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in re.findall(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M
        )
    }
    assert pins and all(locked.get(name) == version for name, version in pins.items())
    return pins
