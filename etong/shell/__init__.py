"""The imperative shell around `etong/core/`: the parts that wait, read, write and publish.

- `ingest.py`     the inbound queue and the ingest loop (backpressure, retry on a full store)
- `outbox.py`     publishing after the commit, the PUBACK ledger, the re-publish after a start
- `scheduler.py`  the re-send scheduler: due pages, paced, woken by new deliveries

`etong/bridge.py` wires them to the store and the core's decisions.
"""
