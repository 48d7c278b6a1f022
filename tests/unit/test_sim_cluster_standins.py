"""Every condition a role waits for is one that the simulated cluster or a stand-in controller
(income_bundle_dev.standins) sets; the stand-ins at work on the simulated cluster are
tests/cluster/test_sim_cluster_standins.py."""

from __future__ import annotations

from income_bundle_dev.standins import STAND_INS
from tests.support.ansible_files import role_waits as _role_waits

# Conditions that real parts of the simulated cluster set (no stand-in needed).
SET_BY_THE_SIMULATED_CLUSTER = {
    ("Node", "Ready"): "kwok's node stages",
    ("CustomResourceDefinition", "Established"): "kube-apiserver",
    ("Deployment", "Available"): "kube-controller-manager, with kwok's pod stages",
}


def test_every_condition_a_role_waits_for_is_one_something_here_sets():
    waits = _role_waits()
    assert waits, "no waits found in the roles: the parser no longer matches them"
    by_kind = {stand_in.kind: stand_in for stand_in in STAND_INS}
    unknown = []
    for role, kind, condition in waits:
        if (kind, condition) in SET_BY_THE_SIMULATED_CLUSTER:
            continue
        stand_in = by_kind.get(kind)
        if stand_in is None or condition not in stand_in.conditions({"spec": {}}):
            unknown.append(f"{role}: {kind} {condition}")
    assert not unknown, f"waits nothing sets: {unknown}"
