"""Telemetry: Prometheus metrics recorded where decisions are made, and the audit log of model initialization."""
