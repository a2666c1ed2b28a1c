"""The ops kit in ops/: Prometheus rules that promtool accepts and whose unit tests pass, a
runbook entry per alert, a Grafana dashboard that imports, and no metric name that /metrics
does not export.

promtool comes with Debian's `prometheus` package; `.ci/run` installs it when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from etong.cluster.metrics import ClusterMetrics
from etong.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "ops" / "prometheus"
ALERTS = PROMETHEUS / "etong-alerts.yml"
RULES = PROMETHEUS / "etong-rules.yml"
ALERT_TESTS = PROMETHEUS / "etong-alerts.test.yml"
EXAMPLE_CONFIG = PROMETHEUS / "prometheus.example.yml"
DASHBOARD = REPO / "ops" / "grafana" / "etong-dashboard.json"
OPERATIONS = REPO / "docs" / "OPERATIONS.md"

# A metric name in PromQL; not the tail of a recording rule's name (`instance:etong_x:rate5m`).
ETONG_METRIC = re.compile(r"(?<![\w:])etong_[a-zA-Z0-9_]+")
# Dashboard variables, replaced by values Prometheus accepts so promtool can parse the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; a missing promtool fails the test with how to get it."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: apt-get install prometheus (scripts/install-test-deps)")
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard: panel targets and template variable queries."""
    queries = [
        target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def exported_names() -> set[str]:
    """Every series name the bridge can put on /metrics, with type suffixes: `Metrics`, and
    in a cluster (DESIGN §7) `ClusterMetrics` in the same registry."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    metrics = Metrics()
    ClusterMetrics(metrics.registry)
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of `markdown`."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_the_rule_files_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES), str(ALERTS))

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_prometheus_config_and_its_rule_files_pass_promtool_check_config() -> None:
    result = promtool("check", "config", str(EXAMPLE_CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}

    assert alerts - fires == set(), "alerts no test fires"
    assert alerts - quiet == set(), "alerts no test expects to stay quiet"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_entry_in_operations() -> None:
    anchors = github_anchors(OPERATIONS.read_text(encoding="utf-8"))
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/OPERATIONS.md", name
        assert anchor == name.lower(), f"{name}: runbook_url should point at its own entry"
        assert anchor in anchors, f"{name}: no heading '{name}' in docs/OPERATIONS.md"


def test_every_metric_the_rules_and_the_dashboard_use_is_exported() -> None:
    expressions = [rule["expr"] for rule in alert_rules() + recording_rules()]
    used = {
        name for expr in expressions + dashboard_queries() for name in ETONG_METRIC.findall(expr)
    }
    exported = exported_names()

    missing = sorted(used - exported)
    assert used, "no etong_ metric found in the rules or the dashboard"
    assert missing == [], f"used in ops/ but not exported by etong.metrics.Metrics: {missing}"


def test_the_dashboard_picks_its_prometheus_from_a_datasource_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert board["id"] is None and board["uid"] == "etong-bridge"  # imports as a new board
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}", variable["name"]
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def as_promql(query: str) -> str:
    """A dashboard query as Prometheus would get it from Grafana."""
    if query.startswith("label_values("):  # Grafana's own function: check its selector
        query = query.removeprefix("label_values(").rsplit(",", 1)[0]
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def test_the_dashboard_queries_are_promql_that_promtool_accepts(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{number}", "expr": as_promql(query)}
        for number, query in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = promtool("check", "rules", str(path))

    assert result.returncode == 0, result.stdout + result.stderr
