"""Every role that loads an image into kind does it through preflight's kind_load_image.yaml
(an archive of the node's platform), never `kind load docker-image` (kind issue 3795)."""

from __future__ import annotations

import yaml

from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"
LOADERS = {
    "seldon_core": "tasks/main.yaml",
    "kserve_stack": "tasks/main.yaml",
    "income_monitor": "tasks/image.yaml",
}


def _tasks(tasks):
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def test_no_role_runs_kind_load_docker_image():
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted(ROLES.glob("*/tasks/*.yaml"))
        if "kind load docker-image"
        in "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
    ]
    assert offenders == []


def test_each_image_role_loads_through_the_archive_task_file():
    for role, tasks_file in LOADERS.items():
        tasks = list(_tasks(yaml.safe_load((ROLES / role / tasks_file).read_text())))
        (load,) = [t for t in tasks if t["name"] == "Load the image into kind"]
        assert load["ansible.builtin.include_tasks"].endswith(
            "/preflight/tasks/kind_load_image.yaml"
        )
        assert set(load["vars"]) == {"preflight_load_image", "preflight_load_cluster"}
        assert role in load["vars"]["preflight_load_cluster"]
        assert "image_on_node.rc != 0" in load["when"]


def test_the_archive_task_file_saves_one_platform_and_removes_the_archive():
    (_, _, block) = yaml.safe_load(
        (ROLES / "preflight" / "tasks" / "kind_load_image.yaml").read_text()
    )
    steps = {t["name"]: t for t in block["block"]}
    save = steps["Save the image for the node's platform"]["ansible.builtin.command"]["argv"]
    assert "'--platform', preflight_load_platform" in save
    load = steps["Load the archive into the kind nodes"]["ansible.builtin.command"]["argv"]
    assert load[:3] == ["kind", "load", "image-archive"]
    (remove,) = block["always"]
    assert remove["ansible.builtin.file"]["state"] == "absent"
    assert all("changed_when" in t for t in block["block"] if "ansible.builtin.command" in t)
