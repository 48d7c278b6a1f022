"""Schema-driven fuzz of the gateway's REST surface (Schemathesis over its OpenAPI description).

Whatever a client sends, the gateway answers without a 5xx while the models are up, every error
has the protocol's `{"error": ...}` shape, and it is still ready afterwards.
"""

from __future__ import annotations

import urllib.request

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from income_bundle.seldon.rest import OPENAPI_PATH

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
)


def _check(case, response) -> None:
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code >= 400 and case.path != "/metrics":
        assert set(response.json()) == {"error"}, response.text[:300]


OPERATIONS = 10  # openapi.yaml's; feedback is the monitor's API, not the gateway's


def test_every_operation_with_generated_requests(seldon):
    schema = schemathesis.openapi.from_path(OPENAPI_PATH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == OPERATIONS
    sent: dict[str, int] = {}
    for operation in operations:

        @FUZZ
        @given(case=operation.as_strategy())
        def fuzz(case):
            response = case.call(base_url=seldon.http_url, timeout=30)
            sent[case.path] = sent.get(case.path, 0) + 1
            _check(case, response)

        fuzz()
    assert len(sent) == OPERATIONS and min(sent.values()) >= 1


def test_inference_with_generated_bodies_for_every_target(seldon):
    schema = schemathesis.openapi.from_path(OPENAPI_PATH)
    infer = next(
        r.ok()
        for r in schema.get_all_operations()
        if r.ok().label.startswith("POST /v2/models/{model_name}/infer")
    )
    targets = [
        "income", "income-preprocess", "income-drift", "income-outlier", "income-explainer",
        "income-production.pipeline", "income-v1.pipeline", "income-v2.pipeline",
    ]  # fmt: skip

    statuses: list[int] = []

    @settings(FUZZ, max_examples=150)
    @given(case=infer.as_strategy(), target=st.sampled_from(targets))
    def fuzz(case, target):
        case.headers = {**(case.headers or {}), "seldon-model": target}
        response = case.call(base_url=seldon.http_url, timeout=60)
        statuses.append(response.status_code)
        _check(case, response)

    fuzz()
    # It did reach the checks: a malformed body is a 400, one over the row limit (a generated
    # shape's first dimension) a 413, both answered before the data is decoded.
    assert len(statuses) >= 150 and statuses.count(400) + statuses.count(413) >= 100
    with urllib.request.urlopen(f"{seldon.http_url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
