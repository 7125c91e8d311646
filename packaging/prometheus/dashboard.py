#!/usr/bin/env python3
"""Writes selfheal-dashboard.json (Grafana), the dashboard beside the rules.

Edit the panels here and rerun: python3 packaging/prometheus/dashboard.py
crates/cli/tests/prometheus.rs checks that the JSON parses and that every
metric it queries exists in a live daemon's /metrics.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
panels = []
y = 0


def row(title):
    global y
    panels.append({"type": "row", "title": title, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": len(panels) + 1})
    y += 1


def panel(title, targets, kind="timeseries", unit=None, w=12, h=8, x=0, desc=""):
    global y
    p = {
        "id": len(panels) + 1,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "targets": [
            {"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i)}
            for i, (e, l) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit or "short"}, "overrides": []},
        "options": {},
    }
    panels.append(p)
    if x + w >= 24:
        y += h


def q99(hist, by):
    """The 99th percentile of a histogram over the dashboard's interval."""
    return f'histogram_quantile(0.99, sum by (le, {by}) (rate({hist}_bucket{{{SEL}}}[$__rate_interval])))'


row("Hangs and recovery")
panel("Hangs diagnosed", [(f'sum by (instance, class) (increase(selfheal_diagnoses_total{{{SEL},class!="legitimate_load"}}[$__rate_interval]))', "{{instance}} {{class}}")],
      x=0,
      desc="Heavy-detector diagnoses by class (legitimate_load excluded).")
panel("Recovery steps", [(f'sum by (instance, action, outcome) (increase(selfheal_recovery_steps_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{action}} {{outcome}}")], x=12)
panel("Watchdog chain healthy", [(f'selfheal_watchdog_chain_healthy{{{SEL}}}', "{{instance}}")], kind="stat", w=6, x=0)
panel("Heartbeat age", [(f'selfheal_heartbeat_age_seconds{{{SEL}}}', "{{instance}} {{component}}")], unit="s", w=9, x=6)
panel("Stalled CPUs", [(f'sum by (instance) (selfheal_cpu_stalled{{{SEL}}})', "{{instance}}"), (f'sum by (instance) (increase(selfheal_cpu_stalls_total{{{SEL}}}[$__rate_interval]))', "{{instance}} new stalls")], w=9, x=15)
panel("Kernel reports", [(f'sum by (instance, verdict) (increase(selfheal_kernel_reports_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{verdict}}")], x=0)
panel("Alerts by rule", [(f'sum by (instance, rule) (increase(selfheal_alerts_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{rule}}")], x=12)
panel("Detection latency (p50, p99)", [(q99("selfheal_detection_latency_seconds", "instance, class"), "{{instance}} {{class}} p99"), (q99("selfheal_detection_latency_seconds", "instance, class").replace("0.99", "0.5", 1), "{{instance}} {{class}} p50")], unit="s", x=0,
      desc="From a hang's first sign to its diagnosis, per class.")
panel("Diagnosis and recovery-step time (p99)", [(q99("selfheal_diagnosis_duration_seconds", "instance"), "{{instance}} diagnosis"), (q99("selfheal_recovery_step_duration_seconds", "instance, action"), "{{instance}} {{action}}")], unit="s", x=12)

row("The machine, as the light detector sees it")
panel("CPU", [(f'selfheal_system_cpu_ratio{{{SEL}}}', "{{instance}} {{mode}}")], unit="percentunit", x=0)
panel("Run queue and blocked tasks", [(f'selfheal_runnable_tasks{{{SEL}}}', "{{instance}} runnable"), (f'selfheal_blocked_tasks{{{SEL}}}', "{{instance}} blocked")], x=12)
panel("Memory available", [(f'selfheal_memory_available_ratio{{{SEL}}}', "{{instance}}")], unit="percentunit", x=0)
panel("Pressure (PSI avg10)", [(f'selfheal_pressure_avg10_ratio{{{SEL}}}', "{{instance}} {{resource}} {{kind}}")], unit="percentunit", x=12)

row("Applications")
panel("Apps up", [(f'selfheal_app_up{{{SEL}}}', "{{instance}} {{app}}")], x=0)
panel("Restarts and crashes", [(f'increase(selfheal_app_restarts_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{app}} restarts"), (f'increase(selfheal_app_crashes_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{app}} crashes")], x=12)
panel("Checkpoints per second", [(f'rate(selfheal_app_checkpoints_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{app}}"), (f'rate(selfheal_app_checkpoint_failures_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{app}} failed")], x=0)
panel("Checkpoint pause", [(q99("selfheal_app_checkpoint_pause_seconds", "instance, app"), "{{instance}} {{app}} p99"), (f'selfheal_app_checkpoint_max_pause_seconds{{{SEL}}}', "{{instance}} {{app}} max"), (f'rate(selfheal_app_checkpoint_pause_seconds_sum{{{SEL}}}[$__rate_interval]) / rate(selfheal_app_checkpoint_pause_seconds_count{{{SEL}}}[$__rate_interval])', "{{instance}} {{app}} mean")], unit="s", x=12)
panel("Rollback time (p99)", [(q99("selfheal_app_rollback_duration_seconds", "instance, app"), "{{instance}} {{app}}")], unit="s", x=0)
panel("Crash to restart (p99)", [(q99("selfheal_app_crash_to_restart_seconds", "instance, app"), "{{instance}} {{app}}")], unit="s", x=12)

row("selfheal itself")
panel("Light detector sample time", [(q99("selfheal_light_sample_duration_seconds", "instance"), "{{instance}} p99"), (f'rate(selfheal_light_sample_duration_seconds_sum{{{SEL}}}[$__rate_interval]) / rate(selfheal_light_sample_duration_seconds_count{{{SEL}}}[$__rate_interval])', "{{instance}} mean"), (f'selfheal_light_cycle_max_seconds{{{SEL}}}', "{{instance}} max")], unit="s", x=0)
panel("CPU and memory of the daemon", [(f'rate(selfheal_process_cpu_seconds_total{{{SEL}}}[$__rate_interval])', "{{instance}} CPU (cores)"), (f'selfheal_process_resident_memory_bytes{{{SEL}}} / 1e6', "{{instance}} RSS (MB)")], x=12)

dashboard = {
    "title": "selfheal",
    "uid": "selfheal",
    "description": "Hangs, recovery, supervised applications and selfheal's own health. Needs the selfheal alert rules for the alert list only.",
    "tags": ["selfheal"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "instance", "type": "query", "datasource": DS, "label": "Instance",
         "query": {"query": "label_values(selfheal_build_info, instance)", "refId": "instance"},
         "definition": "label_values(selfheal_build_info, instance)",
         "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2},
    ]},
    "annotations": {"list": []},
    "panels": panels,
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "selfheal-dashboard.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
print(out)
