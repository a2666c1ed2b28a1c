"""The published wire contract (DESIGN §2): JSON Schemas, an AsyncAPI 3 document and examples.

Everything here is generated from the models in `etong.models` and from the bridge's own
payload builders (`etong.core.delivery`), so what a terminal vendor reads cannot drift from what the
bridge validates and sends. `etong schema` prints it; `python -m etong.contract write
docs/contract` regenerates the committed copies, and a test fails when they drift.

- `examples`: one or more real messages of each kind;
- `schemas`: the JSON Schemas (2020-12) with `$schema`, `$id` and examples;
- `asyncapi`: the AsyncAPI 3.0 document, written for terminals;
- `files`: the committed files under docs/contract/.
"""
