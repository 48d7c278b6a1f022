"""The Knative release files the simulated cluster's playbook runs apply
(tests/cluster/test_sim_cluster_playbooks.py) are the release's assets, byte for byte."""

from __future__ import annotations

import hashlib

from tests.support.paths import KNATIVE_RELEASE

# tests/data/knative-release/README.md: the release assets, byte for byte.
KNATIVE_RELEASE_SHA256 = {
    "serving-crds.yaml": "bb6d837db047aef64dfb437f66365f95aa55b32db3f8e74343e59dc1f7e9ce8e",
    "serving-core.yaml": "636e36155fecb51a60bf869c0d8fa3ef6c2966b1fa9ded8464a48e8a5a880669",
    "kourier.yaml": "2d6893e449e54f2dea4a9faaa75bf881ba91162d3f23651ab41b2db81f6d8a40",
    "eventing-crds.yaml": "5b1162c756c659f4d023e7581bcd4d88d692567428b4cb2597abcdf5b0f364fc",
    "eventing-core.yaml": "06e808e0479fd51b15c983cb9bcd6f6bfc7eeaa8969de1c75c3f7169e8f980b3",
    "in-memory-channel.yaml": "eaf52a73fa1161892bba4ac6ea8a0bcd7f2291885abb152cee98db0492300bc8",
    "mt-channel-broker.yaml": "b4941f11ee8d43ab214940aa5f775c17c3c5a978f7f62f932556240076fca813",
}


def test_knative_release_files_are_the_release_assets():
    hashes = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(KNATIVE_RELEASE.glob("*.yaml"))
    }
    assert hashes == KNATIVE_RELEASE_SHA256
