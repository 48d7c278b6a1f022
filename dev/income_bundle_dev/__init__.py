"""Rigs that test and measure the income bundle: the simulated cluster and its stand-in
controllers, the checks against the pinned upstream sources, a Kafka broker for tests, the local
Prometheus/Alertmanager stack, Jaeger v2 as the trace backend and the benchmarks.

Installed for development (`make deps` runs `pip install -e dev`), never in the income-bundle
wheel: nothing under `income_bundle` imports this package except where a command says it needs it.
"""
