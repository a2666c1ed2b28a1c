"""A broker URL naming the nodes of a broker cluster, and the order a connection tries them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from etong.brokers.nodes import BrokerNodes
from etong.config import BrokerSettings


def test_one_url_is_one_node_with_its_default_port() -> None:
    settings = BrokerSettings(url="mqtt://broker.example")
    assert settings.nodes == [("broker.example", 1883)]
    assert (settings.host, settings.port, settings.tls) == ("broker.example", 1883, False)


def test_a_comma_separated_url_names_every_node_in_order() -> None:
    settings = BrokerSettings(url="mqtts://n1.example, mqtts://n2.example:8884,mqtts://[::1]")
    assert settings.nodes == [("n1.example", 8883), ("n2.example", 8884), ("::1", 8883)]
    assert settings.tls
    assert settings.node_url(settings.nodes[2]) == "mqtts://[::1]:8883"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mqtt://a,mqtts://b", "mixes mqtt:// and mqtts:// nodes"),
        ("mqtt://a,,mqtt://b", "has an empty node between commas"),
        ("mqtt://a:1883,mqtt://a", "names the same node twice"),
        ("mqtt://a,http://b", "node 2 (http://b) scheme must be mqtt:// or mqtts://"),
    ],
)
def test_a_bad_node_list_is_refused_naming_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        BrokerSettings(url=url)


def test_a_connection_moves_to_the_next_node_only_when_its_node_fails_and_wraps_around() -> None:
    nodes = BrokerNodes([("n1", 1), ("n2", 2), ("n3", 3)])
    assert nodes.current == ("n1", 1)
    assert nodes.current == ("n1", 1)  # asking does not move it
    nodes.failed()
    assert nodes.current == ("n2", 2)
    nodes.failed()
    nodes.failed()
    assert nodes.current == ("n1", 1)


def test_a_broker_has_at_least_one_node() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        BrokerNodes([])
