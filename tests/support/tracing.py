"""The cluster paths with tracing on or off (make TRACING=, the Ansible variable tracing_backend):
the role templates rendered by Ansible and the charts' values rendered from the defaults, with
tracing_backend given as `-e` gives it."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.ansible_files import ROLES

BACKENDS = ("jaeger", "signoz")
# The OTLP Service of each backend in the tracing role's default namespace: Jaeger's own Service
# (jaeger.yaml.j2), SigNoz's collector (signoz chart 0.131.0, release "signoz").
COLLECTOR_SERVICE = {"jaeger": "jaeger", "signoz": "signoz-otel-collector"}
OTLP_GRPC_PORT, OTLP_HTTP_PORT = 4317, 4318


def render_template(role: str, template: str, backend: str, **overrides) -> list[dict]:
    """A role template's objects, rendered in process by Ansible's own templar with every role's
    defaults and tracing_backend=<backend> (tests/ansible/render.yaml renders them all with the
    template module, in a subprocess: seconds each)."""
    from income_bundle_dev.upstream_checks import render_with_defaults

    text = (ROLES / role / "templates" / template).read_text()
    variables = {
        "tracing_backend": backend,
        "seldon_core_mlserver_image": "income-mlserver:rendered",
    }
    rendered = render_with_defaults(text, ROLES, {**variables, **overrides})
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def installs(rendered: Path, backend: str, charts: tuple[str, ...]):
    """The roles' installs of these charts, values rendered with tracing_backend=<backend>
    (`rendered`: the role templates some values come from, tracing-independent)."""
    from income_bundle_dev.upstream_checks import chart_installs

    return [
        i
        for i in chart_installs(ROLES, rendered, {"tracing_backend": backend})
        if i.chart in charts
    ]


def role_default(role: str, variable: str, backend: str):
    """A role default rendered by Ansible's templar with tracing_backend=<backend>."""
    from income_bundle_dev.upstream_checks import render_with_defaults

    return render_with_defaults("{{ " + variable + " }}", ROLES, {"tracing_backend": backend})
