"""CI builds the helm that the chart tests (tests/cluster/test_upstream_charts.py) look for."""

from __future__ import annotations

from income_bundle_dev.upstream_checks import HELM_VERSION, helm_cache_dir
from tests.support.paths import ROOT


def test_ci_builds_the_helm_the_tests_look_for():
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"HELM_VERSION={HELM_VERSION}\n" in ci
    assert 'go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"' in ci
    assert '"${XDG_CACHE_HOME:-$HOME/.cache}/income-bundle/helm-$HELM_VERSION/bin"' in ci
    assert str(helm_cache_dir()).endswith(f"income-bundle/helm-{HELM_VERSION}")
