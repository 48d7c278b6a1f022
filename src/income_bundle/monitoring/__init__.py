"""Monitoring the income service: the Grafana dashboard, the static drift report, and what
Prometheus scrapes and alerts on. Each module is imported on its own (no re-exports here), so
using one never pulls in another's dependencies."""
