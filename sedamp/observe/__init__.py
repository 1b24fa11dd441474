"""What a user sees of a run: metrics helpers, progress, the Prometheus exporter, the report."""
