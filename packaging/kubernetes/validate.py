#!/usr/bin/env python3
"""Validates packaging/kubernetes without a cluster.

1. Every manifest against the Kubernetes OpenAPI schemas of several
   versions, strictly (unknown fields are errors), with kubernetes-validate
   (PyPI; its bundled schemas, no network).
2. What a schema cannot say: the DaemonSet is privileged and in the host's
   PID namespace with resource limits; its store and event log are on
   hostPath volumes that match the config; Prometheus annotations match the
   port selfheal listens on; node-problem-detector mounts the same event
   log directory its monitor reads, loads the monitor config, and that
   config (identical to selfheal-monitor.json) follows NPD's MonitorConfig
   (pkg/systemlogmonitor/config.go: filelog plugin keys, lookback, rules
   whose permanent conditions exist).
3. --extract DIR writes the ConfigMaps' config.toml and
   selfheal-monitor.json for the Rust test (crates/cli/tests/kubernetes.rs),
   which runs `selfheal config check` on the first and NPD's matching on
   real event-log lines with the second.

Run through scripts/k8s-validate, which installs kubernetes-validate.
"""
import argparse
import json
import os
import re
import sys

import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
VERSIONS = ["1.29.0", "1.33.0", "1.37.0"]
MANIFESTS = ["selfheal.yaml", "node-problem-detector.yaml"]
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def load(name):
    with open(os.path.join(HERE, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name):
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    errors.append(f"no {kind} {name}")
    return None


GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


def validate_monitor(cfg, where):
    """NPD's MonitorConfig (json.Unmarshal ignores unknown keys, so a typo
    would silently disable a setting: unknown keys are errors here)."""
    known = {"plugin", "pluginConfig", "skipList", "logPath", "lookback", "delay",
             "bufferSize", "source", "conditions", "rules", "metricsReporting"}
    check(set(cfg) <= known, f"{where}: unknown keys {set(cfg) - known}")
    check(cfg.get("plugin") in ("filelog", "journald", "kmsg"), f"{where}: plugin")
    if cfg.get("plugin") == "filelog":
        pc = cfg.get("pluginConfig", {})
        for k in ("timestamp", "message", "timestampFormat"):
            check(isinstance(pc.get(k), str) and pc[k], f"{where}: pluginConfig.{k} missing")
        check(isinstance(cfg.get("logPath"), str) and cfg["logPath"].startswith("/"),
              f"{where}: logPath")
    for k in ("lookback", "delay"):
        if k in cfg:
            check(GO_DURATION.match(cfg[k]) is not None, f"{where}: {k} is not a Go duration")
    check(isinstance(cfg.get("bufferSize", 10), int) and cfg.get("bufferSize", 10) > 0,
          f"{where}: bufferSize")
    check(isinstance(cfg.get("source"), str) and cfg["source"], f"{where}: source")
    check(all(isinstance(s, str) and s for s in cfg.get("skipList", [])), f"{where}: skipList")
    types = []
    for c in cfg.get("conditions", []):
        check(set(c) <= {"type", "reason", "message"}, f"{where}: condition keys {set(c)}")
        for k in ("type", "reason", "message"):
            check(isinstance(c.get(k), str) and c[k], f"{where}: condition {c} lacks {k}")
        types.append(c.get("type"))
    check(len(types) == len(set(types)), f"{where}: duplicate condition types")
    for r in cfg.get("rules", []):
        check(set(r) <= {"type", "condition", "reason", "pattern",
                         "patternGeneratedMessageSuffix"}, f"{where}: rule keys {set(r)}")
        check(r.get("type") in ("temporary", "permanent"), f"{where}: rule type {r.get('type')}")
        check(isinstance(r.get("reason"), str) and r["reason"], f"{where}: rule reason")
        check(isinstance(r.get("pattern"), str) and r["pattern"], f"{where}: rule pattern")
        if r.get("type") == "permanent":
            check(r.get("condition") in types,
                  f"{where}: permanent rule {r.get('reason')} names undefined condition {r.get('condition')}")
        else:
            check("condition" not in r, f"{where}: temporary rule {r.get('reason')} has a condition")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extract", metavar="DIR")
    args = ap.parse_args()

    docs = {}
    for name in MANIFESTS:
        docs[name] = load(name)
        for d in docs[name]:
            for v in VERSIONS:
                try:
                    kubernetes_validate.validate(d, v, strict=True)
                except Exception as e:  # ValidationError, SchemaNotFoundError, ...
                    errors.append(f"{name}: {d['kind']}/{d['metadata']['name']} against {v}: {e}")
        print(f"k8s-validate: {name}: {len(docs[name])} resources checked against {', '.join(VERSIONS)} (strict)")

    sh = docs["selfheal.yaml"]
    ds = find(sh, "DaemonSet", "selfheal")
    cm = find(sh, "ConfigMap", "selfheal-config")
    config_toml = cm["data"]["config.toml"] if cm else ""
    if ds:
        spec = ds["spec"]["template"]["spec"]
        c = spec["containers"][0]
        check(spec.get("hostPID") is True, "selfheal DaemonSet: hostPID must be true")
        check(c.get("securityContext", {}).get("privileged") is True, "selfheal: privileged")
        lim = c.get("resources", {}).get("limits", {})
        check("cpu" in lim and "memory" in lim, "selfheal: cpu and memory limits")
        for k, v in {**lim, **c.get("resources", {}).get("requests", {})}.items():
            check(QUANTITY.match(str(v)) is not None, f"selfheal: resource {k}={v} is not a quantity")
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
              "selfheal: liveness probe on /healthz")
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        host = {n: vols[n]["hostPath"]["path"] for n in mounts if "hostPath" in vols.get(n, {})}

        def mounted_from_host(path):
            """The hostPath behind `path` inside the container, or None."""
            for n, mp in mounts.items():
                if n in host and (path == mp or path.startswith(mp.rstrip("/") + "/")):
                    return host[n] + path[len(mp):]
            return None

        store = re.search(r'^store = "([^"]+)"', config_toml, re.M)
        elog = re.search(r'^event_log = "([^"]+)"', config_toml, re.M)
        listen = re.search(r'^listen = "[^"]*:(\d+)"', config_toml, re.M)
        check(store and mounted_from_host(store.group(1)), "the config's store is not on a hostPath")
        check(elog and mounted_from_host(elog.group(1)), "the config's event_log is not on a hostPath")
        ann = ds["spec"]["template"]["metadata"].get("annotations", {})
        ports = [p["containerPort"] for p in c.get("ports", [])]
        check(ann.get("prometheus.io/scrape") == "true", "prometheus.io/scrape annotation")
        check(listen and ann.get("prometheus.io/port") == listen.group(1) and int(listen.group(1)) in ports,
              "prometheus.io/port, containerPort and the config's listen port differ")
        check(mounts.get("config") == "/etc/selfheal" and "/etc/selfheal/config.toml" in c.get("args", []),
              "selfheal: the config is not where --config points")
        node_log = mounted_from_host(elog.group(1)) if elog else None

    npd = docs["node-problem-detector.yaml"]
    ncm = find(npd, "ConfigMap", "node-problem-detector-selfheal")
    nds = find(npd, "DaemonSet", "node-problem-detector")
    with open(os.path.join(HERE, "selfheal-monitor.json")) as f:
        monitor_file = json.load(f)
    monitor = json.loads(ncm["data"]["selfheal-monitor.json"]) if ncm else {}
    check(monitor == monitor_file, "the NPD ConfigMap's selfheal-monitor.json differs from selfheal-monitor.json")
    validate_monitor(monitor, "selfheal-monitor.json")
    if nds:
        spec = nds["spec"]["template"]["spec"]
        c = spec["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        flag = [a for a in c["command"] if a.startswith("--config.system-log-monitor=")]
        check(len(flag) == 1, "NPD: one --config.system-log-monitor flag")
        cm_mount = [mp for n, mp in mounts.items() if vols.get(n, {}).get("configMap", {}).get("name") == "node-problem-detector-selfheal"]
        check(cm_mount and flag and f"{cm_mount[0]}/selfheal-monitor.json" in flag[0].split("=", 1)[1].split(","),
              "NPD does not load selfheal-monitor.json from its ConfigMap mount")
        log_path = monitor.get("logPath", "")
        npd_host = None
        for n, mp in mounts.items():
            if "hostPath" in vols.get(n, {}) and log_path.startswith(mp.rstrip("/") + "/"):
                npd_host = vols[n]["hostPath"]["path"].rstrip("/") + log_path[len(mp.rstrip("/")):]
        check(npd_host is not None and npd_host == node_log,
              f"NPD reads {npd_host} on the node, selfheal writes {node_log}")

    with open(os.path.join(HERE, "prometheus-scrape.yml")) as f:
        scrape = yaml.safe_load(f)
    job = scrape["scrape_configs"][0]
    rl = job["relabel_configs"]
    keep_name = [r for r in rl if r.get("action") == "keep" and "__meta_kubernetes_pod_label_app_kubernetes_io_name" in r["source_labels"]]
    check(keep_name and ds and re.fullmatch(keep_name[0]["regex"], ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]),
          "prometheus-scrape.yml does not keep the DaemonSet's pods")
    check(any(r.get("target_label") == "job" and r.get("replacement") == "selfheal" for r in rl),
          "prometheus-scrape.yml must set job=selfheal (the alert rules use it)")
    for ann in ("scrape", "port", "path"):
        check(any(f"__meta_kubernetes_pod_annotation_prometheus_io_{ann}" in r.get("source_labels", []) for r in rl),
              f"prometheus-scrape.yml ignores prometheus.io/{ann}")

    if args.extract:
        os.makedirs(args.extract, exist_ok=True)
        with open(os.path.join(args.extract, "config.toml"), "w") as f:
            f.write(config_toml)
        with open(os.path.join(args.extract, "selfheal-monitor.json"), "w") as f:
            f.write(ncm["data"]["selfheal-monitor.json"] if ncm else "")

    for e in errors:
        print(f"k8s-validate: ERROR: {e}", file=sys.stderr)
    if errors:
        return 1
    print("k8s-validate: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
