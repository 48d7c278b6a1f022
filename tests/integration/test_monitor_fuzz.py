"""Schema-driven fuzz of the monitor's API (Schemathesis over the OpenAPI document it serves).

Whatever a client sends, with or without the feedback token, the monitor answers without a 5xx,
every refusal has the `{"error": ...}` shape, and it is still ready afterwards."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from income_bundle.monitoring.service import Monitor
from income_bundle.monitoring.store import SqliteStore
from tests.integration.test_monitor_service import fill
from tests.support.monitor_service import INFO, TOKEN, Served

FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
)
OPERATIONS = 7
PIPELINE = {"pipeline": "income-production"}
UNPARAMETERIZED = {"/metrics", "/ready", "/openapi.json"}


@pytest.fixture
def served(tmp_path):
    store = SqliteStore(tmp_path / "records.sqlite")
    fill(store, 40, seed=3)
    served = Served(Monitor(store, {PIPELINE["pipeline"]: INFO}))
    yield served
    served.stop()
    store.close()


@pytest.mark.parametrize("mode", list(GenerationMode))
@pytest.mark.parametrize("authorized", [True, False])
def test_every_operation_with_generated_requests(served, authorized, mode):
    _, document = served.call("GET", "/openapi.json")
    schema = schemathesis.openapi.from_dict(json.loads(document))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == OPERATIONS
    statuses: dict[str, set[int]] = {}
    if mode == GenerationMode.NEGATIVE:  # only what takes a query or a body can be sent wrong
        operations = [o for o in operations if o.path not in UNPARAMETERIZED]
    for operation in operations:
        # The watched pipeline, so that requests reach its checks rather than the 404.
        fixed = {"path_parameters": PIPELINE} if "{pipeline}" in operation.path else {}

        @FUZZ
        @given(case=operation.as_strategy(mode, **fixed))
        def fuzz(case):
            if authorized:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
            response = case.call(base_url=served.url, timeout=30)
            statuses.setdefault(case.path, set()).add(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            )
            if response.status_code >= 400:
                assert set(response.json()) == {"error"}, response.text[:300]

        fuzz()
    assert len(statuses) == len(operations)
    feedback = statuses["/v2/pipelines/{pipeline}/feedback"]
    # Authorized, generated feedback reaches the body's checks (400) or the store (404: no such
    # request); without the token, nothing gets past the 401.
    expected = ({400, 404} if mode == GenerationMode.NEGATIVE else {404}) if authorized else {401}
    assert expected <= feedback <= {400, 401, 404, 409}, statuses
    assert authorized or feedback == {401}
    assert served.call("GET", "/ready")[0] == 200
