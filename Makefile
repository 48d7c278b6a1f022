# Monitored income-classifier serving on Seldon Core v2 and KServe.
# `make demo` and `make test` work on a fresh clone with Python 3.11 and make.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.deps-stamp
CLI := $(BIN)/income-bundle
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(DEPS_STAMP): requirements.txt constraints.txt pyproject.toml dev/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: $(PYTHON) is not Python 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==24.3.1"
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . -e dev
	touch $@

.PHONY: deps
deps: $(DEPS_STAMP) ## Create .venv and install the pinned dependencies, this package and its development rigs (dev/)

.PHONY: lock
lock: deps ## Re-resolve constraints.txt from requirements.txt (needs network)
	$(BIN)/python -m pip install --quiet "uv==0.13.9"
	$(BIN)/uv pip compile requirements.txt --python-version 3.11 --no-header --no-annotate -o constraints.txt

.PHONY: data
data: deps ## Download and verify the UCI Adult data files
	$(CLI) data

.PHONY: artifacts
artifacts: deps ## Train and package the five MLServer model folders (reuses up-to-date ones)
	$(CLI) train

.PHONY: demo
demo: deps ## Train if needed, serve the bundle (MLServer + local Seldon gateway), run the three scenarios through income-production, print a table, write the low-education drift report (MONITOR=1: Prometheus and Alertmanager too; waits until the drift and outlier alerts fire; SELDON=real: through Seldon Core v2's own components instead, docs/seldon-local.md; TRACING=1 (any value but off): with Jaeger, printing one flagged request's trace)
	$(CLI) demo $(if $(MONITOR),--monitor) $(if $(SELDON),--seldon $(SELDON)) $(if $(filter-out off,$(TRACING)),--tracing)

# TRAFFIC: another window (a monitor's URL, a .sqlite store, a JSONL traffic log or a scenario .npz).
REPORT_TRAFFIC = $(or $(TRAFFIC),data/scenarios/low-education.npz --last-rows 200)

.PHONY: report
report: artifacts ## Drift report of a window of traffic (default: the low-education scenario's last 200 rows) to build/drift-report.html, checked in headless Chromium and photographed to build/drift-report.png
	$(CLI) report $(REPORT_TRAFFIC) -o build/drift-report.html
	$(BIN)/python -m income_bundle_dev.report_page build/drift-report.html --screenshot build/drift-report.png

.PHONY: serve
serve: deps ## Serve the bundle locally until Ctrl-C: gateway on 127.0.0.1:9000 (REST) and 9001 (gRPC), MLServer metrics on 9002
	$(CLI) serve

.PHONY: monitor
monitor: deps ## Prometheus (9090) and Alertmanager (9093) on loopback watching 'make serve', alerts printed (Debian packages prometheus, prometheus-alertmanager)
	$(CLI) monitor

.PHONY: test
test: deps ## Run every tier (unit, integration, cluster), printing each tier's time; what CI runs (the playbook runs beside the rest of the cluster tier)
	$(BIN)/python -m income_bundle_dev.test_tiers --pytest-args='$(PYTEST_ARGS)'

.PHONY: test-fast
test-fast: deps ## Every unit test (tests/unit): in process, no training, no servers; under a minute
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

.PHONY: lint
lint: deps ## ruff over the Python code, ansible-lint (production profile) over ansible/
	$(BIN)/ruff check src dev scripts tests
	$(BIN)/ruff format --check src dev scripts tests
	cd ansible && PATH="$(CURDIR)/$(BIN):$$PATH" ansible-lint --nocolor

.PHONY: format
format: deps ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix src dev scripts tests
	$(BIN)/ruff format src dev scripts tests

# No --quiet: it hides the warnings --strict counts (a broken link or anchor would pass).
.PHONY: docs
docs: deps ## Regenerate docs/variables.md from the argument specs and build the docs site strictly into build/site (CHECK=1: write nothing, fail when stale; CI)
	$(BIN)/python -m income_bundle_dev.ansible_docs $(if $(CHECK),--check)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

.PHONY: dashboard
dashboard: deps ## Regenerate the Grafana dashboard monitoring/grafana/income-dashboard.json from its code
	$(BIN)/python -m income_bundle.monitoring.dashboard --write

# TRITON=1: also run the servers chart's Triton Server and load Seldon's tfsimple1 sample on it.
TRITON_VARS := $(if $(TRITON),-e seldon_core_triton_enabled=true -e '{"income_pipeline_triton_models": ["tfsimple1"]}')
# TRACING=jaeger|signoz: the cluster targets install that tracing backend and point Seldon's
# components, MLServer and Knative at its collector; off or unset traces nothing
# (docs/tracing.md). jaeger fits the laptop profile; signoz needs 4 GiB more. `make demo` takes
# any TRACING but off as "on" (its backend is always the local Jaeger).
CLUSTER_TRACING = $(if $(filter-out off jaeger signoz,$(or $(TRACING),off)),$(error TRACING=$(TRACING): the cluster targets take off, jaeger or signoz),$(or $(TRACING),off))
ANSIBLE_PLAYBOOK = cd ansible && PATH="$(CURDIR)/$(BIN):$$PATH" ansible-playbook $(TRITON_VARS) -e tracing_backend=$(CLUSTER_TRACING)
MESH ?= 127.0.0.1:9080
KAFKA ?= 127.0.0.1:9092
SELDON_CLI := build/cluster/bin/seldon

.PHONY: cluster
cluster: deps artifacts ## Cluster path: kind, cert-manager, Kafka, monitoring and Seldon Core v2 (needs docker, kind, kubectl, helm)
	$(ANSIBLE_PLAYBOOK) playbooks/preflight.yaml playbooks/kind-cluster.yaml playbooks/setup-ecosystem.yaml playbooks/setup-seldon.yaml

.PHONY: deploy
deploy: deps ## Cluster path: validate seldon-examples/, then load the income Models and Pipelines and wait until ready
	$(CLI) validate
	$(ANSIBLE_PLAYBOOK) playbooks/deploy-income.yaml

.PHONY: infer
infer: infer-cluster ## Alias of infer-cluster (make cluster deploy infer)

.PHONY: infer-cluster
infer-cluster: deps ## Cluster path: Seldon's simple test (iris; tfsimple1 with TRITON=1), then the three scenarios through seldon-mesh, with this client and the seldon CLI
	@echo "== iris (one held-out row per class: 0 setosa, 1 versicolor, 2 virginica)"
	$(CLI) infer iris --file data/scenarios/iris.json --url $(MESH)
	@if curl -sf -o /dev/null -H 'seldon-model: tfsimple1' http://$(MESH)/v2/models/tfsimple1/ready; then \
	  echo "== tfsimple1 (Triton: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1)"; \
	  $(SELDON_CLI) model infer tfsimple1 --inference-host $(MESH) "$$(cat ansible/roles/income_pipeline/files/tfsimple1-request.json)" || exit 1; \
	else echo "== tfsimple1 not served (it needs the Triton Server: make cluster deploy TRITON=1)"; fi
	for scenario in reference low-education outliers; do \
	  echo "== $$scenario"; \
	  $(CLI) infer income-production.pipeline --scenario $$scenario --url $(MESH) || exit 1; \
	done
	$(SELDON_CLI) pipeline infer income-production --inference-host $(MESH) "$$(cat data/scenarios/low-education.json)"

# The seldon CLI asks the scheduler for a pipeline's steps before it reads their Kafka topics
# (seldon.<namespace>.model.<step>.outputs); the scheduler's Service is a LoadBalancer that kind
# does not publish, so the cluster targets port-forward it while they run.
SELDON_NAMESPACE := seldon-mesh
SCHEDULER_PORT ?= 9004
define with_scheduler
	@test -x $(SELDON_CLI) || { echo "error: no seldon CLI at $(SELDON_CLI): run 'make cluster'"; exit 1; }
	@log=$$(mktemp); \
	  kubectl -n $(SELDON_NAMESPACE) port-forward svc/seldon-scheduler $(SCHEDULER_PORT):9004 --address 127.0.0.1 >$$log 2>&1 & forward=$$!; \
	  trap 'kill $$forward 2>/dev/null; wait $$forward; rm -f $$log' EXIT; \
	  grep -q -m1 'Forwarding from' <(timeout 30 tail -f -n +1 $$log) || { echo "error: no port-forward to svc/seldon-scheduler in $(SELDON_NAMESPACE):"; cat $$log; exit 1; }; \
	  $(1)
endef

.PHONY: inspect-cluster
inspect-cluster: ## Cluster path: the drift detector's latest verdict, read from Kafka by the seldon CLI
	$(call with_scheduler,$(SELDON_CLI) pipeline inspect income-production.income-drift.outputs.is_drift --namespace $(SELDON_NAMESPACE) --kafka-broker $(KAFKA) --scheduler-host 127.0.0.1:$(SCHEDULER_PORT))

.PHONY: test-cluster
test-cluster: deps ## Cluster path: end-to-end scenarios against a live cluster (MESH=host:port)
	SELDON_MESH=$(MESH) $(BIN)/python -m pytest tests/cluster/test_cluster_live.py -v

.PHONY: sim-cluster
sim-cluster: deps ## Simulated cluster on loopback until Ctrl-C: real kube-apiserver v1.33.1 and etcd, kwok's simulated nodes, no container runs (the first run builds them with Go)
	$(BIN)/python -m income_bundle_dev.simcluster

.PHONY: tracing
tracing: deps ## Jaeger v2 on loopback until Ctrl-C: OTLP on 4317 (gRPC) and 4318 (HTTP), UI on 16686; serve with --otlp-endpoint http://127.0.0.1:4317 (the first run builds it with Go)
	$(BIN)/python -m income_bundle_dev.jaeger

.PHONY: seldon-build
seldon-build: deps ## Build Seldon Core v2.10.2's CLI, scheduler, agent and gateways from source into ~/.cache/income-bundle (docs/seldon-local.md)
	$(BIN)/python -m income_bundle_dev.seldon_core --build-only

.PHONY: seldon-local
seldon-local: deps ## Seldon Core v2's own data plane on loopback (scheduler, agent, MLServer, Kafka, model and pipeline gateways, dataflow engine, an Envoy stand-in), every Model and Pipeline of seldon-examples/ loaded, until Ctrl-C (builds first if needed)
	$(BIN)/python -m income_bundle_dev.seldon_mesh

KSERVE_INGRESS_PORT ?= 8080
KSERVE_NAMESPACE := income-kserve

.PHONY: kserve
kserve: deps artifacts ## KServe path: kind, cert-manager, Knative Serving + Kourier, Knative Eventing, KServe v0.20.0 (needs docker, kind, kubectl, helm)
	$(ANSIBLE_PLAYBOOK) playbooks/preflight.yaml playbooks/kind-cluster.yaml playbooks/setup-kserve.yaml

.PHONY: deploy-kserve
deploy-kserve: deps ## KServe path: validate kserve/, then the income InferenceService, broker, triggers, detectors and event display, waited for and called once
	$(CLI) validate --kserve
	$(ANSIBLE_PLAYBOOK) playbooks/deploy-kserve.yaml

.PHONY: infer-kserve
infer-kserve: deps ## KServe path: the three scenarios through the ingress, then the drift and outlier events the display received
	@host=$$(kubectl -n $(KSERVE_NAMESPACE) get inferenceservice income -o jsonpath='{.status.url}' | cut -d/ -f3); \
	  test -n "$$host" || { echo "error: no ready InferenceService income in $(KSERVE_NAMESPACE): run 'make kserve deploy-kserve'"; exit 1; }; \
	  kubectl -n kourier-system port-forward svc/kourier $(KSERVE_INGRESS_PORT):80 --address 127.0.0.1 >/dev/null & pf=$$!; \
	  trap "kill $$pf" EXIT; sleep 3; \
	  $(BIN)/python -m income_bundle.kserve infer --url http://127.0.0.1:$(KSERVE_INGRESS_PORT) --host $$host || exit 1; \
	  echo "== events the display received (drift after 20 drifted rows, outliers per request)"; sleep 5; \
	  kubectl -n $(KSERVE_NAMESPACE) logs deploy/event-display --tail=200

.PHONY: teardown
teardown: deps ## Cluster path: delete the kind cluster
	$(ANSIBLE_PLAYBOOK) playbooks/teardown.yaml

.PHONY: clean
clean: ## Remove trained artifacts, caches and build outputs (keeps .venv and the data cache)
	find models detectors -mindepth 2 ! -name model-settings.json -delete 2>/dev/null || true
	find models detectors -mindepth 2 -type d -empty -delete 2>/dev/null || true
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

.PHONY: distclean
distclean: clean ## Also remove .venv and the downloaded data
	rm -rf $(VENV) data
