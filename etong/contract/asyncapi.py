"""The AsyncAPI 3.0 document of the bridge's MQTT interface, written for terminal developers.

AsyncAPI describes one application's operations; this document's application is the terminals:
a grid member's handheld `send`s events and `receive`s receipts, an officer's terminal
`receive`s pushes and `send`s acks, and both may `receive` the bridge's retained status. A
vendor generates client code from it as it stands, without inverting the bridge's view.

It is written as JSON (valid YAML) to need no YAML library; the models' `$defs` are hoisted into
`components.schemas` so that every `$ref` resolves inside the one document. Payload schemas use
AsyncAPI's default schema format (a superset of JSON Schema draft 07); the stand-alone JSON
Schemas in docs/contract/ carry the 2020-12 `$schema` and `$id`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from etong import __version__
from etong.config import BrokerSettings, Settings
from etong.contract.examples import all_examples
from etong.contract.schemas import MESSAGE_NAMES
from etong.ids import ID_PATTERN
from etong.models import json_schemas

ASYNCAPI_VERSION = "3.0.0"
# Version of the AsyncAPI MQTT bindings used below (operation qos/retain/messageExpiryInterval,
# message correlationData/responseTopic).
MQTT_BINDING_VERSION = "0.2.0"
_SCHEMAS = "#/components/schemas/"
_HANDHELD = {"name": "handheld", "description": "A grid member's handheld terminal."}
_OFFICER = {"name": "officer", "description": "A police officer's (or registrar's) terminal."}


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0 document for terminals of the bridge configured by `settings`."""
    prefix = settings.bridge.topic_prefix.strip("/")
    servers = {"grid": _server(settings.broker, "Grid side: members' handhelds.")}
    officer_servers = ["grid"]
    if settings.officer_broker is not None:
        servers["officer"] = _server(settings.officer_broker, "Officer side: officers' terminals.")
        officer_servers = ["officer"]
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Ping'an E-Tong bridge",
            "version": __version__,
            "description": (
                "The MQTT interface of the Ping'an E-Tong bridge, from the terminals' side: "
                "grid members' handhelds send population-change reports and receive receipts; "
                "officers' terminals receive pushes and send acks. All traffic is JSON (UTF-8) "
                "at QoS 1, never retained (except the bridge's own status); terminals may use "
                "MQTT 3.1.1 or 5. Ids in topics match " + ID_PATTERN + ". The guide for "
                "terminal developers is docs/PROTOCOL.md in the repository."
            ),
            "tags": [_HANDHELD, _OFFICER],
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": _channels(prefix, officer_servers, both=list(servers)),
        "operations": _operations(settings.delivery.message_expiry_s),
        "components": {
            "schemas": _component_schemas(),
            "messages": _messages(prefix),
            "parameters": {
                name: {"description": f"{what}; matches {ID_PATTERN}."}
                for name, what in (
                    ("grid_id", "Grid id"),
                    ("member_id", "Grid member id"),
                    ("officer_id", "Officer id"),
                    ("instance_id", "Bridge instance id (config bridge.instance_id)"),
                )
            },
            "correlationIds": {
                "delivery_id": {
                    "description": (
                        "The delivery id, the same across every re-send of a delivery. On MQTT 5 "
                        "a push also carries it as Correlation Data."
                    ),
                    "location": "$message.payload#/delivery_id",
                },
                "event_id": {
                    "description": "The event id a receipt answers (chosen by the handheld).",
                    "location": "$message.payload#/event_id",
                },
            },
        },
    }


def _server(broker: BrokerSettings, description: str) -> dict[str, Any]:
    url = urlsplit(broker.url)
    protocol_version = "5" if broker.protocol == 5 else "3.1.1"
    host = f"[{broker.host}]" if ":" in broker.host else broker.host  # IPv6 literal
    return {
        "host": f"{host}:{broker.port}",
        "protocol": "secure-mqtt" if url.scheme == "mqtts" else "mqtt",
        "protocolVersion": protocol_version,
        "description": f"{description} The bridge connects with MQTT {protocol_version}.",
    }


def _channels(prefix: str, officer_servers: list[str], both: list[str]) -> dict[str, Any]:
    # (channel, address, message, servers, description)
    table = [
        ("events", "grid/{grid_id}/member/{member_id}/events", "event", ["grid"],
         "Grid member → bridge: population-change reports."),
        ("receipts", "grid/{grid_id}/member/{member_id}/receipts", "receipt", ["grid"],
         "Bridge → grid member: one receipt per state change of a report."),
        ("inbox", "officer/{officer_id}/inbox", "push", officer_servers,
         "Bridge → officer: pushes, re-sent until acknowledged."),
        ("acks", "officer/{officer_id}/acks", "ack", officer_servers,
         "Officer → bridge: received, verified or declined."),
        ("status", "bridge/{instance_id}/status", "status", both,
         "Bridge presence, retained; the offline value is the bridge's last will."),
    ]  # fmt: skip
    channels: dict[str, Any] = {}
    for name, address, message, servers, description in table:
        params = [part[1:-1] for part in address.split("/") if part.startswith("{")]
        channels[name] = {
            "address": f"{prefix}/{address}",
            "description": description,
            "servers": [{"$ref": f"#/servers/{server}"} for server in servers],
            "parameters": {p: {"$ref": f"#/components/parameters/{p}"} for p in params},
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }
    return channels


_OPERATIONS: list[tuple[str, str, str, str, dict[str, str], str]] = [
    ("sendEvent", "send", "events", "event", _HANDHELD,
     "Publish a report at QoS 1, not retained. Keep it in the outbox until a receipt for its "
     "event_id arrives; without one within a timeout, publish the same payload again."),
    ("receiveReceipts", "receive", "receipts", "receipt", _HANDHELD,
     "Learn what became of each report: one receipt per state change. Subscribe at QoS 1 with "
     "a persistent session; receipts can repeat (drop repeats by event_id + status)."),
    ("receivePushes", "receive", "inbox", "push", _OFFICER,
     "Receive reports to act on. Subscribe at QoS 1 with a persistent session; a push is "
     "re-sent until acked, so drop repeats by delivery_id."),
    ("sendAck", "send", "acks", "ack", _OFFICER,
     "Answer a push at QoS 1, not retained: received at once, then verified or declined."),
    ("receiveBridgeStatus", "receive", "status", "status", _HANDHELD,
     "Optional: whether the bridge is online (retained; offline is its last will)."),
]  # fmt: skip
# Which operation's reply goes where (AsyncAPI 3 request/reply): a report is answered by
# receipts, a push by acks.
_REPLIES = {"sendEvent": "receipts", "receivePushes": "acks"}


def _operations(message_expiry_s: int) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for name, action, channel, message, terminal, description in _OPERATIONS:
        binding: dict[str, Any] = {"qos": 1, "retain": channel == "status"}
        # message_expiry_s = 0 turns expiry off: the bridge then sets no expiry property.
        if channel == "inbox" and message_expiry_s:
            binding["messageExpiryInterval"] = message_expiry_s
        tags = [_HANDHELD, _OFFICER] if channel == "status" else [terminal]
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": description.split(". ")[0].rstrip(".") + ".",
            "description": description,
            "tags": [{"name": tag["name"]} for tag in tags],
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
            "bindings": {"mqtt": {**binding, "bindingVersion": MQTT_BINDING_VERSION}},
        }
        if name in _REPLIES:
            reply = _REPLIES[name]
            reply_message = next(m for _, _, c, m, _, _ in _OPERATIONS if c == reply)
            operation["reply"] = {
                "channel": {"$ref": f"#/channels/{reply}"},
                "messages": [{"$ref": f"#/channels/{reply}/messages/{reply_message}"}],
            }
        operations[name] = operation
    return operations


def _component_schemas() -> dict[str, Any]:
    """Every model schema by title, the nested `$defs` hoisted and their `$ref`s re-pointed."""
    hoisted: dict[str, Any] = {}
    for schema in json_schemas().values():
        body = dict(schema)
        defs: dict[str, Any] = body.pop("$defs", {})
        for name, definition in [*defs.items(), (body["title"], body)]:
            repointed = _repoint_refs(definition)
            # Two models sharing a name would silently overwrite each other's schema.
            if hoisted.setdefault(name, repointed) != repointed:
                raise ValueError(f"two different schemas are both named {name!r}")
    return hoisted


def _repoint_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                _SCHEMAS + value.removeprefix("#/$defs/")
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                else _repoint_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_repoint_refs(item) for item in node]
    return node


_SUMMARIES = {
    "event": "A population-change report.",
    "receipt": "What became of a report.",
    "push": "A report with its context, for an officer.",
    "ack": "An officer's answer to a push.",
    "status": "The bridge's presence: online or offline.",
}


def _messages(prefix: str) -> dict[str, Any]:
    titles = {name: schema["title"] for name, schema in json_schemas().items()}
    examples = all_examples()
    messages: dict[str, Any] = {
        name: {
            "name": name,
            "title": titles[name],
            "summary": _SUMMARIES[name],
            "contentType": "application/json",
            "payload": {"$ref": _SCHEMAS + titles[name]},
            "examples": [
                {"name": e.name, "summary": e.summary, "payload": e.payload} for e in examples[name]
            ],
        }
        for name in MESSAGE_NAMES
    }
    acks = f"{prefix}/officer/{{officer_id}}/acks"
    messages["push"]["correlationId"] = {"$ref": "#/components/correlationIds/delivery_id"}
    messages["push"]["description"] = (
        "On MQTT 5 the push also carries Correlation Data (the delivery_id), a Response Topic "
        f"(the officer's acks topic, {acks}) and a Message Expiry Interval (config "
        "delivery.message_expiry_s). For MQTT 3.1.1 terminals the payload repeats them as "
        "delivery_id, reply_to and expires_at."
    )
    messages["push"]["bindings"] = {
        "mqtt": {
            "correlationData": {"type": "string", "description": "The delivery_id, UTF-8."},
            "responseTopic": acks,
            "bindingVersion": MQTT_BINDING_VERSION,
        }
    }
    messages["ack"]["correlationId"] = {"$ref": "#/components/correlationIds/delivery_id"}
    messages["receipt"]["correlationId"] = {"$ref": "#/components/correlationIds/event_id"}
    messages["event"]["correlationId"] = {"$ref": "#/components/correlationIds/event_id"}
    return messages
