"""`etong schema`: the JSON Schema of every wire message, and an AsyncAPI 3.0 document (DESIGN §5).

The schemas come from the pydantic models in `etong.models`, so the published contract cannot
drift from what the bridge validates. The AsyncAPI document is written as JSON (which is valid
YAML) to need no YAML library; the models' `$defs` are hoisted into `components.schemas` so that
every `$ref` resolves inside the one document.

Topic prefix and broker addresses come from the config when the `--config` file exists; otherwise
from the defaults (plus `ETONG_*` overrides), so the verb works on a machine with no config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from etong import __version__
from etong.config import BrokerSettings, Settings, load_settings, parse_settings
from etong.models import ID_PATTERN, json_schemas

EXIT_OK = 0
MESSAGE_NAMES = ("event", "receipt", "push", "ack", "status")
ASYNCAPI_VERSION = "3.0.0"
# Version of the AsyncAPI MQTT bindings used below (operation qos/retain/messageExpiryInterval,
# message correlationData/responseTopic).
MQTT_BINDING_VERSION = "0.2.0"
_SCHEMAS = "#/components/schemas/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `etong schema` to its sub-parser."""
    parser.add_argument(
        "--format",
        choices=["asyncapi", "jsonschema"],
        default="asyncapi",
        help="an AsyncAPI 3.0 document (default), or the JSON Schema of every message",
    )
    parser.add_argument(
        "--message",
        choices=MESSAGE_NAMES,
        default=None,
        help="print only this message's JSON Schema (implies --format jsonschema)",
    )
    parser.add_argument("--output", default=None, help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Print (or write to `--output`) the requested schema document; 0 on success."""
    schemas = json_schemas()
    document: dict[str, Any]
    if args.message is not None:
        document = schemas[args.message]
    elif args.format == "jsonschema":
        document = schemas
    else:
        document = asyncapi_document(_settings(Path(args.config)))
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return EXIT_OK


def _settings(config_path: Path) -> Settings:
    if config_path.is_file():
        return load_settings(config_path)
    # No config here (e.g. a developer's machine without /etc/etong): the documented defaults.
    return parse_settings({}, config_path=config_path, environ=os.environ)


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the bridge's MQTT interface, as seen from the bridge."""
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
                "Bridges population-change reports from grid members' MQTT handhelds to "
                "community police officers' terminals. All traffic is JSON (UTF-8) at QoS 1; "
                "terminals may use MQTT 3.1.1 or 5. Ids in topics match " + ID_PATTERN + "."
            ),
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
                }
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


def _operations(message_expiry_s: int) -> dict[str, Any]:
    # message_expiry_s = 0 turns expiry off: the bridge then sets no expiry property.
    expiry: dict[str, Any] = {"messageExpiryInterval": message_expiry_s} if message_expiry_s else {}
    table: list[tuple[str, str, str, str, str, dict[str, Any]]] = [
        ("receiveEvents", "receive", "events", "event", "Take in a grid member's report.", {}),
        ("sendReceipts", "send", "receipts", "receipt", "Tell the member what became of it.", {}),
        ("sendPushes", "send", "inbox", "push", "Push a report to an officer.", expiry),
        ("receiveAcks", "receive", "acks", "ack", "Take in an officer's answer to a push.", {}),
        ("sendStatus", "send", "status", "status", "Announce online (offline: the last will).",
         {"retain": True}),
    ]  # fmt: skip
    return {
        name: {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
            "bindings": {
                "mqtt": {"qos": 1, "retain": False, **extra, "bindingVersion": MQTT_BINDING_VERSION}
            },
        }
        for name, action, channel, message, summary, extra in table  # extra: MQTT bindings
    }


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


def _messages(prefix: str) -> dict[str, Any]:
    titles = {name: schema["title"] for name, schema in json_schemas().items()}
    summaries = {
        "event": "A population-change report.",
        "receipt": "What became of a report.",
        "push": "A report with its context, for an officer.",
        "ack": "An officer's answer to a push.",
        "status": "The bridge's presence: online or offline.",
    }
    messages: dict[str, Any] = {
        name: {
            "name": name,
            "title": titles[name],
            "summary": summaries[name],
            "contentType": "application/json",
            "payload": {"$ref": _SCHEMAS + titles[name]},
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
    return messages
