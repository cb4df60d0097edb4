"""Observability artefacts: the Grafana dashboards, the Prometheus alert rules and their runbooks."""
