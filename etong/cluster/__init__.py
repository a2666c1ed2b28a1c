"""Several instances on one PostgreSQL store (DESIGN §7).

- `manager.py`  the lease loop: heartbeat, renew, claim and hand over partitions, serve each
- `metrics.py`  partitions owned, renewals, lost leases, takeovers on /metrics

The rules it carries out are pure and live in the core: `core/partitions.py` (what a
partition is) and `core/balance.py` (which to take, which to hand over).
"""
