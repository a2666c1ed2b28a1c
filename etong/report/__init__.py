"""Station figures (DESIGN §10): `etong report` builds them from the daily aggregate the
store keeps (`period.py` the days asked for, `build.py` the figures, `percentiles.py` the
latency estimates, `render_*.py` one module per output format)."""
