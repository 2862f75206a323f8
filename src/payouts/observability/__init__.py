"""Operating the service: Prometheus metrics (metrics.py, exposition.py)."""
