"""The published JSON Schemas: the models' schemas with a dialect, an id and examples."""

from __future__ import annotations

from typing import Any

from etong.contract.examples import all_examples
from etong.models import json_schemas

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# A URN, not a URL: the schemas are published in the repository (docs/contract/), at no address.
ID_PREFIX = "urn:etong:contract:v1:"
MESSAGE_NAMES = ("event", "receipt", "push", "ack", "status")


def schema_id(message: str) -> str:
    """The `$id` of a message's schema, e.g. urn:etong:contract:v1:event."""
    return ID_PREFIX + message


def published_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every wire message, with `$schema`, `$id` and examples."""
    examples = all_examples()
    return {
        name: {
            "$schema": DIALECT,
            "$id": schema_id(name),
            **schema,
            "examples": [example.payload for example in examples[name]],
        }
        for name, schema in json_schemas().items()
    }
