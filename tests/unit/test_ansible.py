"""The Ansible tree read as files: every stage has its playbook, and every role checks, prefixes
and documents its variables. What needs ansible-playbook or ansible-lint (syntax, lint, rendered
templates, argument specs enforced, the preflight) is tests/cluster/test_ansible.py."""

from __future__ import annotations

import yaml

from tests.support.ansible_files import ANSIBLE, PLAYBOOKS
from tests.support.ansible_files import ROLE_NAMES as ROLES
from tests.support.ansible_files import argument_specs as _specs


def test_every_stage_has_its_playbook_and_all_imports_them():
    names = {p.name for p in PLAYBOOKS}
    assert {"kind-cluster.yaml", "setup-ecosystem.yaml", "setup-seldon.yaml", "deploy-income.yaml",
            "seldon-all.yaml", "teardown.yaml"} <= names  # fmt: skip
    imported = [
        p["ansible.builtin.import_playbook"]
        for p in yaml.safe_load((ANSIBLE / "playbooks" / "seldon-all.yaml").read_text())
    ]
    assert imported[1:] == [
        "kind-cluster.yaml",
        "setup-ecosystem.yaml",
        "setup-seldon.yaml",
        "deploy-income.yaml",
    ]


def test_every_role_checks_its_string_variables_first():
    for role in ROLES:
        first = yaml.safe_load((ANSIBLE / "roles" / role / "tasks" / "main.yaml").read_text())[0]
        assert first["ansible.builtin.include_tasks"].endswith(
            "preflight/tasks/check_types.yaml"
        ), role


def test_every_variable_is_role_prefixed_and_documented():
    for role, options in _specs().items():
        defaults = yaml.safe_load((ANSIBLE / "roles" / role / "defaults" / "main.yaml").read_text())
        assert set(defaults) == set(options), role
        for variable, option in options.items():
            assert variable.startswith(role + "_"), variable
            assert option.get("description"), variable
            if "default" in option:
                assert option["default"] == defaults[variable], variable
