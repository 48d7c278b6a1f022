"""The test rig's Kafka broker (income_bundle_dev.kafka_broker) itself."""

from __future__ import annotations

import pytest

from income_bundle_dev.kafka_broker import KafkaBroker, missing_tools


@pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))
def test_a_cluster_id_that_starts_with_a_dash_formats_and_starts():
    # One random id in 64 starts with "-" (URL-safe base64); the storage tool once read it as a
    # flag and the broker failed to start (seen in a full run of the integration tier).
    with KafkaBroker(cluster_id="-" + "A" * 21) as broker:
        assert broker.bootstrap.startswith("127.0.0.1:")
        assert (broker.workdir / "data" / "meta.properties").read_text().count("cluster.id=-A") == 1
