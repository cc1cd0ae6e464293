#!/usr/bin/env python3
"""Checks the Helm chart in helm/facevault without a cluster.

Uses the real Helm v4 engine as a library (helm-python-sdk) to lint and render
the chart for several value sets, validates every rendered manifest against
the Kubernetes API schemas (kubernetes-validate, strict: unknown fields fail),
and asserts the properties the service depends on: hardened pods, gRPC probes
on the plaintext health port, no secret material anywhere in the manifests,
Secret volumes no wider than 0440 and never mounted with subPath (so a rotated
key or certificate reaches the running pods), the key-lifecycle settings in the
rendered config, a config checksum that rolls the pods, the audit anchor file
(absent by default; with audit.anchorFile and audit.anchorVolume, named in the
config and mounted read-write from that volume at its directory), and values
the schema or the templates must refuse (including key epochs too long for the
deletion deadline, and an anchor file without a volume on the read-only root
filesystem).

When a built `facevault` binary is found (FACEVAULT_BIN, target/release,
target/debug or PATH), the rendered facevault.toml is also fed to the service
itself to prove it parses and validates.

Run through scripts/check-chart.sh, which installs the Python packages.
Exits non-zero on any failure.
"""

from __future__ import annotations

import copy
import hashlib
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
# The chart directory; another path may be given as the first argument.
CHART = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO / "helm" / "facevault"
KUBE_VERSION = "1.32.0"
RELEASE = "fv"
NAMESPACE = "security"
FULLNAME = f"{RELEASE}-facevault"
# Kinds whose schemas are not part of Kubernetes (CRDs): checked structurally.
CRD_KINDS = {("cert-manager.io/v1", "Certificate"), ("monitoring.coreos.com/v1", "ServiceMonitor")}
SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}

MODEL = {"id": "arcface-r100-512", "dimension": 512, "threshold": 0.42}
# The service serves only declared tenants and refuses to start without one.
TENANTS = {"bank-a": {}}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


BASE = {"redis": {"url": "redis://redis:6379"}}

GOOD_SETS: dict[str, dict[str, Any]] = {
    "defaults": BASE,
    "minimal": {
        "replicaCount": 1,
        "redis": {"url": "redis://redis.data:6379"},
        "models": [MODEL],
        "tenants": TENANTS,
        "serviceAccount": {"create": False},
        "podDisruptionBudget": {"enabled": False},
        "topologySpread": {"enabled": False},
        "autoscaling": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "certManager": {"enabled": False},
        "service": {"headless": {"enabled": False}},
        "resources": {},
    },
    "certmanager+hpa+netpol": {
        "redis": {
            "url": "rediss://redis.data.svc:6380/0",
            "password": {"existingSecret": "facevault-redis", "key": "password"},
            "tls": {"ca": {"existingConfigMap": "redis-ca", "key": "ca.crt"}},
        },
        "models": [MODEL, {"id": "adaface-ir101", "dimension": 512, "threshold": 0.35}],
        "tenants": {"bank-a": {"exposeScores": False, "maxTemplateAgeDays": 730}, "bank-b": {}},
        "certManager": {"enabled": True, "issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"}},
        "tls": {
            "clientCa": {"existingConfigMap": "facevault-clients-bundle", "key": "bundle.pem"},
            "crls": {"existingSecret": "facevault-crls", "keys": ["clients.crl.pem"]},
        },
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9},
        "networkPolicy": {
            "enabled": True,
            "ingress": {"namespaceSelector": {"matchLabels": {"facevault-access": "true"}}},
            "egress": {"redis": {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}}]}},
        },
        "service": {"headless": {"enabled": True}},
        "telemetry": {"otlpEndpoint": "http://otel-collector.observability:4317", "traceSampleRatio": 0.1},
        "deletion": {"holidayFile": {"existingConfigMap": "facevault-holidays"}},
        "preStopSleepSeconds": 5,
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "image": {"digest": "sha256:" + "ab" * 32},
    },
    "redis-cluster+tls": {
        "redis": {
            "url": "rediss://facevault@redis-cluster.data.svc:6380",
            "mode": "cluster",
            "replicaAcks": 1,
            "urlSecret": {"existingSecret": "facevault-redis-url", "key": "url"},
            "tls": {"ca": {"existingSecret": "redis-ca", "key": "ca.crt"}},
        },
        "models": [MODEL],
        "tenants": TENANTS,
        "tls": {"existingSecret": "facevault-server-tls", "clientCa": {"existingSecret": "facevault-client-ca"}},
        "keys": {
            "keyring": {"existingSecret": "fv-keyring"},
            "transformSecret": {"existingSecret": "fv-transform"},
            "sealingKeys": {"existingSecret": "fv-sealing"},
            "receiptSigningKey": {"existingSecret": "fv-receipt"},
        },
        "server": {"bindAddress": "[::]", "drainTimeoutSecs": 25},
        "networkPolicy": {"enabled": True},
    },
    "prometheus+servicemonitor": {
        "redis": {"url": "redis://redis.data:6379"},
        "models": [MODEL],
        "tenants": TENANTS,
        "telemetry": {"prometheus": {"enabled": True, "serviceMonitor": {
            "enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus-stack"}}}},
        "networkPolicy": {"metrics": {"from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}},
    },
    "key lifecycle tuned": {
        "redis": {"url": "rediss://redis.data.svc:6380"},
        "models": [MODEL],
        "tenants": TENANTS,
        "tls": {"reloadIntervalSecs": 60},
        "keys": {"reloadIntervalSecs": 30, "rewrapPerSecond": 500, "epochDays": 5, "maxRewrapDays": 2},
        "deletion": {"gracePeriodSecs": 86_400},
    },
}

# The audit anchor file on a PersistentVolumeClaim (one replica: the service
# writes one file name, so replicas must not share the file).
ANCHOR_FILE = "/var/lib/facevault/anchors/audit-anchors.jsonl"
ANCHOR_PVC = {"persistentVolumeClaim": {"claimName": "facevault-anchors"}}
ANCHOR_SET = deep_merge(BASE, {"replicaCount": 1, "models": [MODEL], "tenants": TENANTS,
                               "audit": {"anchorFile": ANCHOR_FILE, "anchorVolume": ANCHOR_PVC}})

# Values the chart must refuse (schema or template `fail`).
BAD_SETS: dict[str, dict[str, Any]] = {
    'replicaCount: "two"': deep_merge(BASE, {"replicaCount": "two"}),
    "replicaCount: 0": deep_merge(BASE, {"replicaCount": 0}),
    "redis.url missing": {},
    "redis.url: null": {"redis": {"url": None}},
    'redis.url: ""': {"redis": {"url": ""}},
    'redis.url: "http://x"': {"redis": {"url": "http://x"}},
    "redis.url with an inline password": {"redis": {"url": "rediss://:hunter2@redis:6380"}},
    "transform secret = keyring secret": deep_merge(
        BASE, {"keys": {"keyring": {"existingSecret": "k"}, "transformSecret": {"existingSecret": "k"}}}
    ),
    "unknown top-level key": deep_merge(BASE, {"replicacount": 3}),
    "model threshold 1.5": deep_merge(BASE, {"models": [{"id": "m", "dimension": 512, "threshold": 1.5}]}),
    "https OTLP endpoint": deep_merge(BASE, {"telemetry": {"otlpEndpoint": "https://collector:4317"}}),
    "certManager without issuer": deep_merge(BASE, {"certManager": {"enabled": True}}),
    "audit retention < 180 days": deep_merge(BASE, {"audit": {"retentionDays": 30}}),
    "redis.mode sentinel": deep_merge(BASE, {"redis": {"mode": "sentinel"}}),
    "redis.replicaAcks 17": deep_merge(BASE, {"redis": {"replicaAcks": 17}}),
    "keys.epochDays: 0": deep_merge(BASE, {"keys": {"epochDays": 0}}),
    'keys.epochDays: "7"': deep_merge(BASE, {"keys": {"epochDays": "7"}}),
    "keys.maxRewrapDays: 0": deep_merge(BASE, {"keys": {"maxRewrapDays": 0}}),
    "keys.reloadIntervalSecs: 0": deep_merge(BASE, {"keys": {"reloadIntervalSecs": 0}}),
    "keys.reloadIntervalSecs: 3601": deep_merge(BASE, {"keys": {"reloadIntervalSecs": 3601}}),
    "keys.rewrapPerSecond: 0": deep_merge(BASE, {"keys": {"rewrapPerSecond": 0}}),
    "keys.rewrapPerSecond: 1000001": deep_merge(BASE, {"keys": {"rewrapPerSecond": 1_000_001}}),
    "tls.reloadIntervalSecs: 0": deep_merge(BASE, {"tls": {"reloadIntervalSecs": 0}}),
    "unknown keys.* key": deep_merge(BASE, {"keys": {"epochdays": 7}}),
    # Template refusals: the shred window does not end before the deadline.
    "keys.epochDays 19 + maxRewrapDays 1 (20 days > 19)": deep_merge(
        BASE, {"keys": {"epochDays": 19, "maxRewrapDays": 1}}
    ),
    "keys.epochDays 18 + maxRewrapDays 1 + 1 s grace": deep_merge(
        BASE, {"keys": {"epochDays": 18, "maxRewrapDays": 1}, "deletion": {"gracePeriodSecs": 1}}
    ),
    "keys.epochDays 7 + maxRewrapDays 1 with 5 working days": deep_merge(
        BASE, {"deletion": {"workingDays": 5}}
    ),
    "audit.anchorFile: 42": deep_merge(BASE, {"audit": {"anchorFile": 42, "anchorVolume": ANCHOR_PVC}}),
    'audit.anchorVolume: "facevault-anchors"': deep_merge(
        BASE, {"audit": {"anchorFile": ANCHOR_FILE, "anchorVolume": "facevault-anchors"}}
    ),
    "audit.anchorFile relative": deep_merge(
        BASE, {"audit": {"anchorFile": "anchors/audit-anchors.jsonl", "anchorVolume": ANCHOR_PVC}}
    ),
    "audit.anchorFile in /": deep_merge(
        BASE, {"audit": {"anchorFile": "/audit-anchors.jsonl", "anchorVolume": ANCHOR_PVC}}
    ),
    "audit.anchorVolume a Secret (read-only)": deep_merge(
        BASE, {"audit": {"anchorFile": ANCHOR_FILE, "anchorVolume": {"secret": {"secretName": "x"}}}}
    ),
    "telemetry.prometheus.port: 0": deep_merge(BASE, {"telemetry": {"prometheus": {"enabled": True, "port": 0}}}),
    'telemetry.prometheus.serviceMonitor.interval: "30"': deep_merge(
        BASE, {"telemetry": {"prometheus": {"enabled": True, "serviceMonitor": {"enabled": True, "interval": "30"}}}}
    ),
    "networkPolicy.metrics.from not a list": deep_merge(BASE, {"networkPolicy": {"metrics": {"from": {}}}}),
    # Template refusals.
    "telemetry.prometheus.port = server.healthPort": deep_merge(
        BASE, {"telemetry": {"prometheus": {"enabled": True, "port": 8081}}}
    ),
    "ServiceMonitor without telemetry.prometheus.enabled": deep_merge(
        BASE, {"telemetry": {"prometheus": {"serviceMonitor": {"enabled": True}}}}
    ),
    "audit.anchorFile without audit.anchorVolume (read-only root)": deep_merge(
        BASE, {"audit": {"anchorFile": ANCHOR_FILE}}
    ),
    "audit.anchorVolume without audit.anchorFile": deep_merge(BASE, {"audit": {"anchorVolume": ANCHOR_PVC}}),
    "audit.anchorFile in /tmp": deep_merge(
        BASE, {"audit": {"anchorFile": "/tmp/audit-anchors.jsonl", "anchorVolume": ANCHOR_PVC}}
    ),
    "audit.anchorFile over the Secret mounts": deep_merge(
        BASE, {"audit": {"anchorFile": "/var/run/audit-anchors.jsonl", "anchorVolume": ANCHOR_PVC}}
    ),
}
# Bad sets refused by a template `fail` (not the schema): the message must say the fix.
FIX_MESSAGES = {
    "keys.epochDays 19 + maxRewrapDays 1 (20 days > 19)": "shorten keys.epochDays or keys.maxRewrapDays",
    "keys.epochDays 18 + maxRewrapDays 1 + 1 s grace": "shorten keys.epochDays or keys.maxRewrapDays",
    "keys.epochDays 7 + maxRewrapDays 1 with 5 working days": "shorten keys.epochDays or keys.maxRewrapDays",
    "audit.anchorFile without audit.anchorVolume (read-only root)": "needs audit.anchorVolume",
    "audit.anchorVolume without audit.anchorFile": "set audit.anchorFile",
    "audit.anchorFile in /tmp": "put the anchor file in a directory of its own",
    "audit.anchorFile over the Secret mounts": "put the anchor file in a directory of its own",
    "telemetry.prometheus.port = server.healthPort": "telemetry.prometheus.port must differ",
    "ServiceMonitor without telemetry.prometheus.enabled": "needs telemetry.prometheus.enabled",
}
# Bad sets the values schema itself must refuse (not a template), at this path.
SCHEMA_PATHS = {
    'replicaCount: "two"': "/replicaCount",
    "audit.anchorFile: 42": "/audit/anchorFile",
    'audit.anchorVolume: "facevault-anchors"': "/audit/anchorVolume",
    "audit.anchorFile relative": "/audit/anchorFile",
    "audit.anchorFile in /": "/audit/anchorFile",
    "audit.anchorVolume a Secret (read-only)": "/audit/anchorVolume",
    "telemetry.prometheus.port: 0": "/telemetry/prometheus/port",
    'telemetry.prometheus.serviceMonitor.interval: "30"': "/telemetry/prometheus/serviceMonitor/interval",
    "networkPolicy.metrics.from not a list": "/networkPolicy/metrics/from",
}
# The bad sets the brief names: lint must report them as errors too.
LINT_BAD = ['replicaCount: "two"', "redis.url missing", 'redis.url: "http://x"', "audit.anchorFile: 42"]


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []
        self.notes: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{what}{': ' + detail if detail else ''}")
            print(f"  FAIL {what}{': ' + detail if detail else ''}")
        return ok

    def run(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - report and go on
            self.check(False, what, f"{type(exc).__name__}: {exc}")


R = Report()


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def merged_values(values: dict[str, Any]) -> dict[str, Any]:
    """The values a release would use: the chart's defaults coalesced with `values`."""
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def manifests(rendered: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def of_kind(docs: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [d for _, d in docs if d.get("kind") == kind]


def one(docs: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, got {len(found)}")
    return found[0]


def lint(values: dict[str, Any]) -> dict[str, Any]:
    return helm.lint(CHART, values, strict=True, kube_version="v" + KUBE_VERSION)


def lint_problems(report: dict[str, Any], min_severity: int) -> list[str]:
    return [
        f"[{SEVERITY.get(m['severity'], m['severity'])}] {m['path']}: {m['error'].strip()}"
        for m in report.get("messages", [])
        if m.get("severity", 0) >= min_severity
    ]


# --- structural checks ------------------------------------------------------

def validate_schema(name: str, docs: list[tuple[str, dict[str, Any]]]) -> None:
    for path, doc in docs:
        what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')} ({path})"
        if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
            check_certificate_shape(what, doc)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            R.check(True, what)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            R.check(False, f"{what} validates against Kubernetes {KUBE_VERSION}", f"{where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            R.check(False, f"{what} has a known schema", exc.message)


def check_certificate_shape(what: str, doc: dict[str, Any]) -> None:
    spec = doc.get("spec") or {}
    if doc["kind"] == "ServiceMonitor":
        check_service_monitor_shape(what, doc)
        return
    if doc["kind"] != "Certificate":
        R.check(isinstance(spec, dict) and bool(spec), f"{what} has a spec")
        return
    R.check(doc["apiVersion"] == "cert-manager.io/v1", f"{what} apiVersion cert-manager.io/v1")
    R.check(bool(spec.get("secretName")), f"{what} has spec.secretName")
    issuer = spec.get("issuerRef") or {}
    R.check(bool(issuer.get("name")) and issuer.get("kind") in ("Issuer", "ClusterIssuer"),
            f"{what} issuerRef name and kind", str(issuer))
    names = spec.get("dnsNames") or []
    R.check(bool(names) and all(isinstance(n, str) and n for n in names), f"{what} has dnsNames")
    usages = spec.get("usages") or []
    R.check("server auth" in usages, f"{what} usages include server auth", str(usages))
    allowed = {"secretName", "secretTemplate", "duration", "renewBefore", "privateKey", "usages",
               "dnsNames", "issuerRef", "commonName", "ipAddresses", "uris", "subject"}
    extra = set(spec) - allowed
    R.check(not extra, f"{what} has only known spec fields", str(sorted(extra)))
    R.check("metadata" in doc and doc["metadata"].get("namespace") == NAMESPACE, f"{what} namespaced")


DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


def check_service_monitor_shape(what: str, doc: dict[str, Any]) -> None:
    """prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1), checked
    against the fields of its CRD the chart uses."""
    spec = doc.get("spec") or {}
    R.check(doc["apiVersion"] == "monitoring.coreos.com/v1", f"{what} apiVersion monitoring.coreos.com/v1")
    R.check(set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"},
            f"{what} has only known spec fields", str(sorted(spec)))
    R.check(bool((spec.get("selector") or {}).get("matchLabels")), f"{what} selects by labels")
    endpoints = spec.get("endpoints") or []
    R.check(len(endpoints) >= 1, f"{what} has endpoints")
    for e in endpoints:
        R.check(set(e) <= {"port", "path", "scheme", "interval", "scrapeTimeout"},
                f"{what} endpoint has only known fields", str(sorted(e)))
        R.check(isinstance(e.get("port"), str) and e["port"], f"{what} endpoint names its port")
        R.check(e.get("scheme") in (None, "http", "https"), f"{what} endpoint scheme", str(e.get("scheme")))
        for key in ("interval", "scrapeTimeout"):
            if key in e:
                R.check(isinstance(e[key], str) and DURATION.match(e[key]) is not None,
                        f"{what} endpoint {key} is a Prometheus duration", str(e[key]))
    R.check(doc.get("metadata", {}).get("namespace") == NAMESPACE, f"{what} namespaced")


CRED_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s\"'@]*:(?!\$\(REDIS_PASSWORD\)@)[^/\s\"'@]+@", re.I)


def check_no_secrets(name: str, rendered: dict[str, str], docs: list[tuple[str, dict[str, Any]]]) -> None:
    kinds = [d.get("kind") for _, d in docs]
    R.check("Secret" not in kinds, f"{name}: no Secret is rendered", str(kinds))
    text = "\n".join(rendered.values())
    for marker in ("BEGIN ", "PRIVATE KEY", "hunter2"):
        R.check(marker not in text, f"{name}: no {marker.strip()!r} in any manifest")
    R.check(not CRED_URL.search(text), f"{name}: no URL with inline credentials",
            CRED_URL.search(text).group(0) if CRED_URL.search(text) else "")
    for _, doc in docs:
        if doc.get("kind") == "ConfigMap":
            R.check(set(doc.get("data", {})) == {"facevault.toml"} and "binaryData" not in doc,
                    f"{name}: the ConfigMap carries only facevault.toml")
        else:
            R.check("data" not in doc and "stringData" not in doc,
                    f"{name}: {doc.get('kind')} carries no data")
    dep = one(docs, "Deployment")
    for container in dep["spec"]["template"]["spec"]["containers"]:
        for env in container.get("env", []):
            if "value" in env and env["name"] != "FACEVAULT_REDIS_URL":
                R.check("password" not in env["name"].lower(), f"{name}: env {env['name']} comes from a Secret")


def mount_for(path: str, mounts: list[dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for m in mounts:
        if path.startswith(m["mountPath"].rstrip("/") + "/"):
            if best is None or len(m["mountPath"]) > len(best["mountPath"]):
                best = m
    return best


def check_file_is_mounted(name: str, label: str, path: str, pod: dict[str, Any], container: dict[str, Any],
                          secret: bool) -> dict[str, Any] | None:
    mount = mount_for(path, container.get("volumeMounts", []))
    if not R.check(mount is not None, f"{name}: {label} {path} lies in a mounted volume"):
        return None
    volume = next((v for v in pod["volumes"] if v["name"] == mount["name"]), None)
    if not R.check(volume is not None, f"{name}: volume {mount['name']} exists"):
        return None
    source = volume.get("secret") or volume.get("configMap")
    if not R.check(source is not None, f"{name}: {label} comes from a Secret or ConfigMap", str(volume)):
        return None
    rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
    items = [i["path"] for i in source.get("items", [])]
    R.check(rel in items, f"{name}: {label} file {rel} is projected by volume {mount['name']}", str(items))
    if secret:
        R.check("secret" in volume, f"{name}: {label} is mounted from a Secret", str(volume))
    return volume


def check_anchor_mount(name: str, path: str, source: dict[str, Any], pod: dict[str, Any],
                       container: dict[str, Any]) -> None:
    """The anchor file's directory is a read-write mount of audit.anchorVolume
    (the root filesystem is read-only): the service creates and appends to it."""
    mount = mount_for(path, container.get("volumeMounts", []))
    if not R.check(mount is not None, f"{name}: audit.anchor_file {path} lies in a mounted volume"):
        return
    R.check(mount["mountPath"] == posixpath.dirname(path),
            f"{name}: the anchor volume is mounted at {posixpath.dirname(path)}", mount["mountPath"])
    R.check(not mount.get("readOnly"), f"{name}: the anchor volume is mounted read-write", str(mount))
    volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), None)
    if not R.check(volume is not None, f"{name}: volume {mount['name']} exists"):
        return
    R.check({k: v for k, v in volume.items() if k != "name"} == source,
            f"{name}: the anchor volume is audit.anchorVolume", str(volume))
    R.check(not {"secret", "configMap", "downwardAPI", "projected"} & set(volume),
            f"{name}: the anchor volume is writable (no Secret, ConfigMap or projected source)", str(volume))


def check_deployment(name: str, values: dict[str, Any], rendered: dict[str, str],
                     docs: list[tuple[str, dict[str, Any]]]) -> None:
    merged = merged_values(values)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    containers = pod["containers"]
    R.check(len(containers) == 1, f"{name}: one container")
    c = containers[0]

    # Pod security.
    psc = pod.get("securityContext", {})
    R.check(psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
    R.check(psc.get("runAsUser") == 65532 and psc.get("fsGroup") == 65532, f"{name}: pod uid/fsGroup 65532", str(psc))
    R.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: pod seccomp RuntimeDefault")
    R.check(pod.get("automountServiceAccountToken") is False, f"{name}: pod automountServiceAccountToken false")
    csc = c.get("securityContext", {})
    R.check(csc.get("runAsNonRoot") is True, f"{name}: container runAsNonRoot")
    R.check(csc.get("readOnlyRootFilesystem") is True, f"{name}: container readOnlyRootFilesystem")
    R.check(csc.get("allowPrivilegeEscalation") is False, f"{name}: container allowPrivilegeEscalation false")
    R.check(csc.get("privileged") in (None, False), f"{name}: container not privileged")
    R.check(csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"),
            f"{name}: container drops ALL capabilities", str(csc.get("capabilities")))
    R.check(csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: container seccomp RuntimeDefault")
    R.check(not c.get("image", "").endswith(":latest"), f"{name}: image is pinned", c.get("image", ""))

    # Ports and probes.
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    R.check(ports.get("grpc") == merged["server"]["grpcPort"] and ports.get("health") == merged["server"]["healthPort"],
            f"{name}: container ports grpc and health", str(ports))
    R.check(ports.get("grpc") != ports.get("health"), f"{name}: health port differs from the gRPC port")
    for probe_name in ("livenessProbe", "readinessProbe"):
        probe = c.get(probe_name)
        if not R.check(isinstance(probe, dict), f"{name}: {probe_name} present"):
            continue
        handlers = [k for k in ("grpc", "httpGet", "tcpSocket", "exec") if k in probe]
        R.check(handlers == ["grpc"], f"{name}: {probe_name} is a native gRPC probe", str(handlers))
        port = probe.get("grpc", {}).get("port")
        R.check(port in (ports.get("health"), "health"), f"{name}: {probe_name} targets the health port", str(port))
    # Readiness follows Redis (the overall status); liveness asks for the service
    # that follows only the process, so a Redis outage never restarts the pods.
    R.check(c.get("livenessProbe", {}).get("grpc", {}).get("service") == "liveness",
            f"{name}: livenessProbe asks for the `liveness` health service")
    R.check(c.get("readinessProbe", {}).get("grpc", {}).get("service", "") == "",
            f"{name}: readinessProbe asks for the overall health status")

    # Graceful shutdown.
    drain = merged["server"]["drainTimeoutSecs"]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    R.check(grace > drain + 10, f"{name}: terminationGracePeriodSeconds {grace} > drain {drain} + flush time")

    # Config checksum = sha256 of the rendered ConfigMap.
    cm_path = next(p for p in rendered if p.endswith("/templates/configmap.yaml"))
    annotation = dep["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/config")
    R.check(annotation == hashlib.sha256(rendered[cm_path].encode()).hexdigest(),
            f"{name}: checksum/config is the sha256 of the rendered ConfigMap", str(annotation))

    # Secret volumes: 0440 or stricter, never readable by others.
    for volume in pod.get("volumes", []):
        if "secret" not in volume:
            continue
        mode = volume["secret"].get("defaultMode")
        R.check(mode is not None and mode & ~0o440 == 0,
                f"{name}: Secret volume {volume['name']} defaultMode {oct(mode) if mode is not None else None} <= 0440")
        for item in volume["secret"].get("items", []):
            if "mode" in item:
                R.check(item["mode"] & ~0o440 == 0, f"{name}: item {item['path']} mode <= 0440")
    R.check(any(v["name"] == "tmp" and "emptyDir" in v for v in pod.get("volumes", []))
            and any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), f"{name}: emptyDir at /tmp")
    anchor_file = merged["audit"]["anchorFile"]
    anchor_dir = posixpath.dirname(anchor_file) if anchor_file else None
    for m in c.get("volumeMounts", []):
        if m["mountPath"] not in ("/tmp", anchor_dir):
            R.check(m.get("readOnly") is True, f"{name}: mount {m['mountPath']} read-only")
    # The kubelet refreshes Secret and ConfigMap volumes in place, but never a
    # subPath mount: rotated keys and renewed certificates must reach the pods.
    sub_paths = [m["mountPath"] for m in c.get("volumeMounts", []) if "subPath" in m or "subPathExpr" in m]
    R.check(not sub_paths, f"{name}: no subPath mount (key and certificate files are reloaded)", str(sub_paths))
    mount_paths = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])]
    nested = [a for a in mount_paths for b in mount_paths if a != b and a.startswith(b)]
    R.check(not nested, f"{name}: no mount nests inside another", str(nested))

    # The config file and every path it names are mounted.
    env = {e["name"]: e for e in c.get("env", [])}
    config_path = env.get("FACEVAULT_CONFIG", {}).get("value", "/etc/facevault/facevault.toml")
    cm = one(docs, "ConfigMap")
    R.check(cm["metadata"]["name"] == FULLNAME, f"{name}: ConfigMap name")
    check_file_is_mounted(name, "config file", config_path, pod, c, secret=False)
    toml = tomllib.loads(cm["data"]["facevault.toml"])
    R.check(toml["server"]["listen"].endswith(f":{ports.get('grpc')}"), f"{name}: server.listen uses the gRPC port")
    R.check(toml["server"]["health_listen"].endswith(f":{ports.get('health')}"),
            f"{name}: server.health_listen uses the health port")
    R.check(toml["server"]["drain_timeout_secs"] == drain, f"{name}: drain timeout in the config")
    R.check(toml["logging"]["format"] == "json", f"{name}: JSON logs")
    R.check(toml["redis"]["url"] == merged["redis"]["url"], f"{name}: redis.url in the config")
    secret_volumes = {}
    for label in ("keyring", "transform_secret", "sealing_keys", "receipt_signing_key"):
        secret_volumes[label] = check_file_is_mounted(name, f"keys.{label}", toml["keys"][label], pod, c, secret=True)
    check_file_is_mounted(name, "tls.cert", toml["tls"]["cert"], pod, c, secret=True)
    check_file_is_mounted(name, "tls.key", toml["tls"]["key"], pod, c, secret=True)
    check_file_is_mounted(name, "tls.client_ca", toml["tls"]["client_ca"], pod, c, secret=False)
    for crl in toml["tls"]["crls"]:
        check_file_is_mounted(name, "tls.crls", crl, pod, c, secret=False)
    if "holiday_file" in toml.get("deletion", {}):
        check_file_is_mounted(name, "deletion.holiday_file", toml["deletion"]["holiday_file"], pod, c, secret=False)
    # The audit anchor file: only when asked for, on its own volume, read-write.
    anchor_volumes = [v for v in pod.get("volumes", []) if v["name"] == "audit-anchors"]
    if anchor_file:
        R.check(toml["audit"].get("anchor_file") == anchor_file,
                f"{name}: audit.anchor_file = audit.anchorFile in the config", str(toml["audit"].get("anchor_file")))
        check_anchor_mount(name, anchor_file, merged["audit"]["anchorVolume"], pod, c)
    else:
        R.check("anchor_file" not in toml["audit"], f"{name}: no audit.anchor_file without audit.anchorFile")
        R.check(not anchor_volumes, f"{name}: no anchor volume without audit.anchorFile")
    # Hot reload and the key lifecycle.
    R.check(toml["tls"]["reload_interval_secs"] == merged["tls"]["reloadIntervalSecs"],
            f"{name}: tls.reload_interval_secs in the config", str(toml["tls"].get("reload_interval_secs")))
    for value, key in (("reloadIntervalSecs", "reload_interval_secs"), ("rewrapPerSecond", "rewrap_per_second"),
                       ("epochDays", "epoch_days"), ("maxRewrapDays", "max_rewrap_days")):
        got = toml["keys"].get(key)
        R.check(type(got) is int and got == merged["keys"][value],
                f"{name}: keys.{key} = keys.{value} in the config", f"{got!r} != {merged['keys'][value]!r}")
    keyring, transform = secret_volumes.get("keyring"), secret_volumes.get("transform_secret")
    if keyring and transform:
        R.check(keyring["secret"]["secretName"] != transform["secret"]["secretName"],
                f"{name}: transform secret and keyring are separate Secrets")
    R.check(len(toml["models"]) == len(merged["models"]) if "models" in toml else not merged["models"],
            f"{name}: models rendered")
    R.check(sorted(toml.get("tenants", {})) == sorted(merged["tenants"]), f"{name}: tenants declared",
            f"{sorted(toml.get('tenants', {}))} != {sorted(merged['tenants'])}")

    # Redis URL and trust.
    redis = merged["redis"]
    url_env = env.get("FACEVAULT_REDIS_URL")
    if redis["password"]["existingSecret"]:
        names = [e["name"] for e in c["env"]]
        R.check("REDIS_PASSWORD" in names and url_env is not None
                and names.index("REDIS_PASSWORD") < names.index("FACEVAULT_REDIS_URL"),
                f"{name}: REDIS_PASSWORD defined before FACEVAULT_REDIS_URL")
        R.check(env["REDIS_PASSWORD"].get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                == redis["password"]["existingSecret"], f"{name}: REDIS_PASSWORD from its Secret")
        R.check(url_env is not None and "$(REDIS_PASSWORD)@" in url_env.get("value", "")
                and url_env["value"].startswith(redis["url"].split("://")[0] + "://"),
                f"{name}: FACEVAULT_REDIS_URL composes $(REDIS_PASSWORD)", str(url_env))
    elif redis["urlSecret"]["existingSecret"]:
        R.check(url_env is not None and url_env.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                == redis["urlSecret"]["existingSecret"], f"{name}: FACEVAULT_REDIS_URL from its Secret")
    else:
        R.check(url_env is None, f"{name}: no FACEVAULT_REDIS_URL override without a Secret")
    R.check("SSL_CERT_FILE" not in env, f"{name}: the pod's system roots are left alone")
    R.check(toml["redis"]["mode"] == redis["mode"], f"{name}: redis.mode in the config")
    R.check(toml["redis"]["replica_acks"] == redis["replicaAcks"], f"{name}: redis.replica_acks in the config")
    ca = redis["tls"]["ca"]
    if ca["existingSecret"] or ca["existingConfigMap"]:
        ca_file = toml["redis"].get("tls_ca")
        R.check(ca_file is not None, f"{name}: redis.tls_ca set for the Redis CA")
        if ca_file:
            check_file_is_mounted(name, "Redis CA (redis.tls_ca)", ca_file, pod, c, secret=False)
    else:
        R.check("tls_ca" not in toml["redis"], f"{name}: no redis.tls_ca without a Redis CA")

    # Replicas and spreading.
    if merged["autoscaling"]["enabled"]:
        R.check("replicas" not in dep["spec"], f"{name}: the HPA owns the replica count")
    else:
        R.check(dep["spec"].get("replicas") == merged["replicaCount"], f"{name}: replicas = replicaCount")
    if merged["topologySpread"]["enabled"]:
        keys = sorted(t["topologyKey"] for t in pod.get("topologySpreadConstraints", []))
        R.check(keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"],
                f"{name}: topology spread over zone and hostname", str(keys))
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    R.check(bool(anti.get("preferredDuringSchedulingIgnoredDuringExecution")), f"{name}: preferred podAntiAffinity")
    for key in ("requests",):
        if merged["resources"]:
            R.check(bool(c.get("resources", {}).get(key)), f"{name}: resource {key} set")


def check_service(name: str, values: dict[str, Any], docs: list[tuple[str, dict[str, Any]]]) -> None:
    merged = merged_values(values)
    services = of_kind(docs, "Service")
    R.check(len(services) == (2 if merged["service"]["headless"]["enabled"] else 1), f"{name}: Service count")
    prometheus = merged["telemetry"]["prometheus"]
    for svc in services:
        sname = svc["metadata"]["name"]
        # The gRPC port, and on the main Service the metrics port when scraping
        # is on; never the plaintext health port.
        expected = {"grpc"}
        if prometheus["enabled"] and not sname.endswith("-headless"):
            expected.add("metrics")
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        R.check(set(ports) == expected, f"{name}: Service {sname} ports {sorted(expected)}", str(sorted(ports)))
        if "grpc" in ports:
            R.check(ports["grpc"].get("appProtocol") == "grpc", f"{name}: Service {sname} port grpc appProtocol grpc")
            R.check(ports["grpc"].get("targetPort") in ("grpc", merged["server"]["grpcPort"]),
                    f"{name}: Service {sname} port grpc targets the gRPC port", str(ports["grpc"]))
        if "metrics" in ports:
            m = ports["metrics"]
            R.check(m.get("port") == prometheus["port"] and m.get("targetPort") == "metrics"
                    and m.get("appProtocol") == "http",
                    f"{name}: Service {sname} port metrics {prometheus['port']} -> metrics (http)", str(m))
        if sname.endswith("-headless"):
            R.check(svc["spec"].get("clusterIP") == "None", f"{name}: headless Service has clusterIP None")
    sas = of_kind(docs, "ServiceAccount")
    R.check(len(sas) == (1 if merged["serviceAccount"]["create"] else 0), f"{name}: ServiceAccount rendered as asked")
    for sa in sas:
        R.check(sa.get("automountServiceAccountToken") is False, f"{name}: ServiceAccount automount false")


def check_optional(name: str, values: dict[str, Any], rendered: dict[str, str],
                   docs: list[tuple[str, dict[str, Any]]]) -> None:
    merged = merged_values(values)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    hpa = of_kind(docs, "HorizontalPodAutoscaler")
    if merged["autoscaling"]["enabled"]:
        if R.check(len(hpa) == 1, f"{name}: HorizontalPodAutoscaler rendered"):
            h = hpa[0]
            R.check(h["apiVersion"] == "autoscaling/v2", f"{name}: HPA autoscaling/v2")
            R.check(h["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], f"{name}: HPA targets the Deployment")
            R.check(h["spec"]["metrics"][0]["resource"]["name"] == "cpu", f"{name}: HPA on CPU")
    else:
        R.check(not hpa, f"{name}: no HPA")

    expected_replicas = merged["autoscaling"]["minReplicas"] if merged["autoscaling"]["enabled"] else merged["replicaCount"]
    pdbs = of_kind(docs, "PodDisruptionBudget")
    if merged["podDisruptionBudget"]["enabled"] and expected_replicas > 1:
        R.check(len(pdbs) == 1 and pdbs[0]["spec"].get("minAvailable") == 1, f"{name}: PDB minAvailable 1")
    else:
        R.check(not pdbs, f"{name}: no PDB (single replica or disabled)")

    certs = of_kind(docs, "Certificate")
    if merged["certManager"]["enabled"]:
        if R.check(len(certs) == 1, f"{name}: Certificate rendered"):
            cert = certs[0]
            tls_volume = next(v for v in pod["volumes"] if v["name"] == "tls")
            R.check(cert["spec"]["secretName"] == tls_volume["secret"]["secretName"],
                    f"{name}: Certificate writes the Secret the pods mount")
            svc = f"{FULLNAME}.{NAMESPACE}.svc"
            R.check(svc in cert["spec"]["dnsNames"], f"{name}: Certificate names {svc}", str(cert["spec"]["dnsNames"]))
            if merged["service"]["headless"]["enabled"]:
                R.check(f"{FULLNAME}-headless.{NAMESPACE}.svc" in cert["spec"]["dnsNames"],
                        f"{name}: Certificate names the headless Service")
            R.check(cert["spec"]["issuerRef"]["name"] == merged["certManager"]["issuerRef"]["name"],
                    f"{name}: Certificate issuerRef from values")
    else:
        R.check(not certs, f"{name}: no Certificate")

    nps = of_kind(docs, "NetworkPolicy")
    np_values = merged["networkPolicy"]
    prometheus = merged["telemetry"]["prometheus"]
    if np_values["enabled"]:
        if R.check(len(nps) == 1, f"{name}: NetworkPolicy rendered"):
            np = nps[0]["spec"]
            R.check(np["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
                    f"{name}: the NetworkPolicy selects the pods", str(np["podSelector"]))
            R.check(sorted(np["policyTypes"]) == ["Egress", "Ingress"], f"{name}: policy covers ingress and egress")
            # Ingress: one rule per port, each with exactly the peers the values name
            # (no `from` = any source).
            rules: dict[str, list[Any]] = {}
            for rule in np.get("ingress", []):
                ports = [(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])]
                if R.check(len(ports) == 1 and ports[0][0] == "TCP",
                           f"{name}: every ingress rule opens one TCP port", str(rule)):
                    rules[ports[0][1]] = rule.get("from")
            expected = {"grpc", "health"} | ({"metrics"} if prometheus["enabled"] else set())
            R.check(set(rules) == expected, f"{name}: ingress on exactly {sorted(expected)}", str(sorted(rules)))
            ingress = np_values["ingress"]
            clients = [{"namespaceSelector": ingress["namespaceSelector"] or {},
                        "podSelector": ingress["podSelector"] or {}}] + ingress["extraFrom"]
            R.check(rules.get("grpc") == clients, f"{name}: gRPC port only from the client selector and extraFrom",
                    str(rules.get("grpc")))
            R.check(rules.get("health") == (ingress["healthFrom"] or None),
                    f"{name}: health port from {'healthFrom' if ingress['healthFrom'] else 'anywhere'}",
                    str(rules.get("health")))
            if prometheus["enabled"]:
                R.check(rules.get("metrics") == (np_values["metrics"]["from"] or None),
                        f"{name}: metrics port only from networkPolicy.metrics.from", str(rules.get("metrics")))
            # Egress: DNS, Redis and (with an endpoint) OTLP, nothing else, each port-scoped.
            R.check(all(rule.get("ports") for rule in np["egress"]), f"{name}: every egress rule is port-scoped")
            egress = {(p.get("protocol", "TCP"), p["port"]) for rule in np["egress"] for p in rule.get("ports", [])}
            m = re.search(r":(\d+)(/|$)", merged["redis"]["url"].split("://")[-1].split("@")[-1])
            redis_ports = set(np_values["egress"]["redis"]["ports"]) or {int(m.group(1)) if m else 6379}
            expected_egress = {("UDP", 53), ("TCP", 53)} | {("TCP", p) for p in redis_ports}
            if merged["telemetry"]["otlpEndpoint"]:
                m = re.search(r":(\d+)(/|$)", merged["telemetry"]["otlpEndpoint"].split("://")[-1])
                expected_egress.add(("TCP", np_values["egress"]["otlp"]["port"] or (int(m.group(1)) if m else 4317)))
            if not np_values["egress"]["extra"]:
                R.check(egress == expected_egress, f"{name}: egress only to DNS, Redis and (when set) OTLP",
                        f"{sorted(egress, key=str)} != {sorted(expected_egress, key=str)}")
            redis_rules = [r for r in np["egress"]
                           if {p["port"] for p in r["ports"]} == redis_ports and r["ports"][0].get("protocol") == "TCP"]
            R.check(len(redis_rules) == 1 and redis_rules[0].get("to") == (np_values["egress"]["redis"]["to"] or None),
                    f"{name}: Redis egress to egress.redis.to", str(redis_rules))
    else:
        R.check(not nps, f"{name}: no NetworkPolicy")

    check_prometheus(name, merged, docs)

    notes = next((t for p, t in rendered.items() if p.endswith("NOTES.txt")), "")
    line = f"grpcurl -cacert ca.pem -cert app.pem -key app.key {FULLNAME}.{NAMESPACE}.svc:{merged['service']['port']} list"
    R.check(line in notes, f"{name}: NOTES.txt prints the grpcurl line", line)
    labels = ",".join(f"{k}={v}" for k, v in sorted(
        (merged["networkPolicy"]["ingress"]["podSelector"] or {}).get("matchLabels", {}).items()))
    R.check(("NetworkPolicy admits" in notes and f"labelled {labels}" in " ".join(notes.split()))
            == merged["networkPolicy"]["enabled"],
            f"{name}: NOTES.txt names the client label exactly when the NetworkPolicy is on")
    if merged["redis"]["mode"] == "cluster":
        R.check("cluster" in notes.lower(), f"{name}: NOTES.txt explains Redis Cluster mode")
    R.check(("no tenants are declared" in notes) == (not merged["tenants"]),
            f"{name}: NOTES.txt warns exactly when no tenant is declared")


def check_prometheus(name: str, merged: dict[str, Any], docs: list[tuple[str, dict[str, Any]]]) -> None:
    """telemetry.prometheus: prometheus_listen in the config, the container port
    `metrics` and the ServiceMonitor, each exactly when asked for."""
    prometheus = merged["telemetry"]["prometheus"]
    toml = tomllib.loads(one(docs, "ConfigMap")["data"]["facevault.toml"])
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    monitors = of_kind(docs, "ServiceMonitor")
    if prometheus["enabled"]:
        listen = f"{merged['server']['bindAddress']}:{prometheus['port']}"
        R.check(toml["telemetry"].get("prometheus_listen") == listen,
                f"{name}: telemetry.prometheus_listen = {listen}", str(toml["telemetry"].get("prometheus_listen")))
        R.check(ports.get("metrics") == prometheus["port"], f"{name}: container port metrics", str(ports))
    else:
        R.check("prometheus_listen" not in toml["telemetry"], f"{name}: no prometheus_listen unless enabled")
        R.check("metrics" not in ports, f"{name}: no metrics port unless enabled", str(ports))
    if not prometheus["serviceMonitor"]["enabled"]:
        R.check(not monitors, f"{name}: no ServiceMonitor unless enabled")
        return
    if not R.check(len(monitors) == 1, f"{name}: ServiceMonitor rendered"):
        return
    sm = monitors[0]
    svc = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == FULLNAME)
    selector = sm["spec"]["selector"]["matchLabels"]
    R.check(selector.items() <= svc["metadata"]["labels"].items(), f"{name}: the ServiceMonitor selects the Service",
            str(selector))
    R.check(sm["spec"].get("namespaceSelector", {}).get("matchNames") == [NAMESPACE],
            f"{name}: the ServiceMonitor looks in the release's namespace")
    want = prometheus["serviceMonitor"]
    R.check(sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "scheme": "http",
                                          "interval": want["interval"], "scrapeTimeout": want["scrapeTimeout"]}],
            f"{name}: the ServiceMonitor scrapes /metrics on port metrics every {want['interval']}",
            str(sm["spec"]["endpoints"]))
    R.check(want["labels"].items() <= sm["metadata"]["labels"].items(),
            f"{name}: the ServiceMonitor carries serviceMonitor.labels", str(sm["metadata"]["labels"]))


def check_secure_defaults() -> None:
    """The default render denies by default: a NetworkPolicy (its rules are
    checked with the "defaults" value set), and no scrape port or ServiceMonitor."""
    docs = manifests(render(BASE))
    R.check(len(of_kind(docs, "NetworkPolicy")) == 1, "defaults: the NetworkPolicy is rendered without being asked for")
    R.check(not of_kind(docs, "ServiceMonitor"), "defaults: no ServiceMonitor")
    ports = [p["name"] for p in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]]
    R.check(ports == ["grpc", "health"], "defaults: the container opens only the grpc and health ports", str(ports))


NUMBERS = {word: n for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}


def check_docs_count() -> None:
    """Both READMEs say how many value sets this check renders: keep them true."""
    renders = len(GOOD_SETS) + 1  # and the audit anchor set
    for doc in (REPO / "README.md", CHART / "README.md"):
        text = " ".join(doc.read_text().split())
        said = re.findall(r"render(?:s|ed)? (?:it )?for (\w+) value sets", text)
        R.check(bool(said) and all(NUMBERS.get(w, w) in (renders, str(renders)) for w in said),
                f"{os.path.relpath(doc, REPO)} says the chart is rendered for {renders} value sets", str(said))


# --- the service's own config parser (optional) -----------------------------

def servable(values: dict[str, Any]) -> bool:
    """The service starts only with a model and a declared tenant (the notes warn otherwise)."""
    merged = merged_values(values)
    return bool(merged["models"]) and bool(merged["tenants"])


def find_binary() -> str | None:
    for candidate in (os.environ.get("FACEVAULT_BIN"), REPO / "target/release/facevault",
                      REPO / "target/debug/facevault", shutil.which("facevault")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def check_service_accepts(name: str, docs: list[tuple[str, dict[str, Any]]], binary: str, tmp: Path) -> None:
    """`facevault serve` parses and validates the config before it reads any key
    file, so "cannot read <mounted path>" proves the rendered config is accepted."""
    toml = one(docs, "ConfigMap")["data"]["facevault.toml"]
    path = tmp / f"{re.sub(r'[^a-z0-9]+', '-', name)}.toml"
    path.write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEVAULT_") and k != "SSL_CERT_FILE"}
    try:
        proc = subprocess.run([binary, "serve", "--config", str(path)], env=env, capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        R.check(False, f"{name}: the service exits on the unmounted key files", "it kept running")
        return
    err = proc.stderr.strip().splitlines()
    last = err[-1] if err else ""
    R.check(proc.returncode != 0 and re.search(r"cannot read /var/run/facevault/", proc.stderr) is not None,
            f"{name}: the service accepts the rendered facevault.toml", last or f"exit {proc.returncode}")


# --- key epochs against the deletion deadline --------------------------------

def shortest_span_days(working_days: int) -> int:
    """Fewest calendar days from the end of a request day to the end of the
    `working_days`-th working day after it, over every weekday of a calendar
    with Monday-Friday working days and no holidays: counted day by day, apart
    from the formula the template uses."""
    best = None
    for start in range(7):  # 0 = Monday
        day, counted = start, 0
        while counted < working_days:
            day += 1
            counted += day % 7 < 5
        best = day - start if best is None else min(best, day - start)
    assert best is not None
    return best


def check_epoch_bound() -> None:
    """keys.epochDays + keys.maxRewrapDays (+ the grace period) equal to the
    shortest span renders, one second more is refused, for several
    deletion.workingDays; 15 working days give 19 days (from a Sunday night)."""
    R.check(shortest_span_days(15) == 19, "15 working days span at least 19 calendar days",
            str(shortest_span_days(15)))
    for working in (3, 5, 7, 15, 60):
        span = shortest_span_days(working)
        fits = deep_merge(BASE, {"deletion": {"workingDays": working},
                                 "keys": {"epochDays": span - 1, "maxRewrapDays": 1}})
        try:
            toml = tomllib.loads(one(manifests(render(fits)), "ConfigMap")["data"]["facevault.toml"])
            R.check(toml["keys"]["epoch_days"] + toml["keys"]["max_rewrap_days"] == span,
                    f"{working} working days: epochDays + maxRewrapDays = {span} renders")
        except helm.HelmError as exc:
            R.check(False, f"{working} working days: epochDays + maxRewrapDays = {span} renders", str(exc)[-300:])
        for what, over in (("one day more", {"keys": {"epochDays": span}}),
                           ("one second of grace more", {"deletion": {"gracePeriodSecs": 1}})):
            try:
                render(deep_merge(fits, over))
                R.check(False, f"{working} working days: {what} than {span} days is refused", "it rendered")
            except helm.HelmError as exc:
                R.check("shorten keys.epochDays" in str(exc),
                        f"{working} working days: {what} than {span} days is refused", str(exc)[-300:])


# --- audit anchors ------------------------------------------------------------

def check_anchors(binary: str | None, tmp: Path) -> None:
    """No anchor file by default; with audit.anchorFile on a PVC, the config names
    it (TOML-quoted), the pod mounts the PVC read-write at its directory, the
    schema and strict lint accept the values, and every check of a value set
    holds for it too."""
    default_cm = one(manifests(render(BASE)), "ConfigMap")["data"]["facevault.toml"]
    R.check("anchor_file" not in default_cm, "defaults: no anchor_file in the config")
    R.check("anchor_file" not in tomllib.loads(default_cm)["audit"], "defaults: [audit] has no anchor_file")

    problems = lint_problems(lint(ANCHOR_SET), 2)
    R.check(not problems, "anchors: the schema and strict lint accept audit.anchorFile + anchorVolume",
            "; ".join(problems))
    rendered = render(ANCHOR_SET)
    docs = manifests(rendered)
    text = one(docs, "ConfigMap")["data"]["facevault.toml"]
    line = f'anchor_file = "{ANCHOR_FILE}"'
    R.check(any(l.strip() == line for l in text.splitlines()), f"anchors: the config has {line}")
    R.check(tomllib.loads(text)["audit"].get("anchor_file") == ANCHOR_FILE, "anchors: [audit] anchor_file parses")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    anchor_dir = posixpath.dirname(ANCHOR_FILE)
    mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"] == anchor_dir]
    R.check(len(mounts) == 1, f"anchors: one mount at {anchor_dir}", str(mounts))
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in mounts:
        claim = volumes.get(m["name"], {}).get("persistentVolumeClaim", {}).get("claimName")
        R.check(claim == "facevault-anchors", f"anchors: the PVC facevault-anchors is mounted at {anchor_dir}",
                str(claim))
        R.check(m.get("readOnly") in (None, False), "anchors: the PVC is mounted read-write", str(m))
    R.check(c["securityContext"].get("readOnlyRootFilesystem") is True,
            "anchors: the root filesystem stays read-only")

    name = "audit anchors on a PVC"
    print(f"  {name}: {', '.join(sorted(d['kind'] for _, d in docs))}")
    validate_schema(name, docs)
    check_no_secrets(name, rendered, docs)
    check_deployment(name, ANCHOR_SET, rendered, docs)
    check_service(name, ANCHOR_SET, docs)
    check_optional(name, ANCHOR_SET, rendered, docs)
    if binary and servable(ANCHOR_SET):
        check_service_accepts(name, docs, binary, tmp)


# --- check-config on the rendered config ---------------------------------------

MOUNT_ROOT = "/var/run/facevault"


def check_config_on_rendered(binary: str | None) -> None:
    """`facevault check-config` (every check `serve` makes before it talks to
    Redis) on the ConfigMap's facevault.toml for the default values. With the
    chart's empty models and tenants it must refuse and name only those; with
    one model and one tenant added it must pass. The files the config names are
    materialised as the pod mounts them (key files from `facevault keygen`, a CA
    and server certificate from openssl, mode 0440 like the Secret volumes),
    under a temp dir standing in for the mount root: the only change to the
    rendered text is that prefix."""
    if not R.check(binary is not None, "check-config: a built facevault binary",
                   "build it first: cargo build"):
        return
    if not R.check(shutil.which("openssl") is not None, "check-config: openssl for the test certificates",
                   "apt-get install openssl"):
        return
    import tempfile
    with tempfile.TemporaryDirectory() as tmp_dir:
        root = Path(tmp_dir) / "mount"
        keygen = Path(tmp_dir) / "keygen"
        subprocess.run([binary, "keygen", "--dir", str(keygen)], check=True, capture_output=True)
        pki = Path(tmp_dir) / "pki"
        pki.mkdir()
        ssl = ["openssl"]
        run = lambda *args: subprocess.run([*ssl, *args], check=True, capture_output=True, cwd=pki)  # noqa: E731
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=chart check CA", "-keyout", "ca.key", "-out", "ca.pem")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={FULLNAME}",
            "-keyout", "server.key", "-out", "server.csr")
        (pki / "server.ext").write_text(f"subjectAltName=DNS:{FULLNAME}\nextendedKeyUsage=serverAuth\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "server.ext", "-out", "server.pem")

        def check(name: str, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
            text = one(manifests(render(values)), "ConfigMap")["data"]["facevault.toml"]
            config = tomllib.loads(text)
            sources = {
                config["tls"]["cert"]: pki / "server.pem",
                config["tls"]["key"]: pki / "server.key",
                config["tls"]["client_ca"]: pki / "ca.pem",
                config["keys"]["keyring"]: keygen / "keyring.json",
                config["keys"]["transform_secret"]: keygen / "transform.key",
                config["keys"]["sealing_keys"]: keygen / "sealing-keys.json",
                config["keys"]["receipt_signing_key"]: keygen / "receipt-signing.key",
            }
            for mounted, source in sources.items():
                R.check(mounted.startswith(MOUNT_ROOT + "/"), f"check-config {name}: {mounted} is under the mount root")
                target = root / mounted.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copyfile(source, target)
                    target.chmod(0o440)
            path = Path(tmp_dir) / f"{re.sub(r'[^a-z0-9]+', '-', name)}.toml"
            path.write_text(text.replace(f'"{MOUNT_ROOT}/', f'"{root}{MOUNT_ROOT}/'))
            env = {k: v for k, v in os.environ.items() if not k.startswith("FACEVAULT_")}
            return subprocess.run([binary, "check-config", "--config", str(path)], env=env,
                                  capture_output=True, text=True, timeout=60)

        bare = check("defaults", BASE)
        problems = [l.strip() for l in bare.stderr.splitlines() if l.startswith("  [")]
        R.check(bare.returncode == 1 and problems
                and all(p.startswith(("[models]", "[tenants]")) for p in problems),
                "check-config refuses the bare defaults for their empty models and tenants only",
                bare.stderr.strip()[-400:])
        served = check("defaults with a model and a tenant", deep_merge(BASE, {"models": [MODEL], "tenants": TENANTS}))
        R.check(served.returncode == 0, "check-config accepts the defaults with a model and a tenant",
                (served.stderr or served.stdout).strip()[-400:])


# --- main -------------------------------------------------------------------

def main() -> int:
    started = time.monotonic()
    print(f"helm-python-sdk {version('helm-python-sdk')} (Helm SDK {helm.helm_sdk_version()}), "
          f"kubernetes-validate {version('kubernetes-validate')}, Kubernetes schemas {KUBE_VERSION}")
    print(f"chart {os.path.relpath(CHART, REPO)}")

    print("--- lint (strict)")
    for name, values in GOOD_SETS.items():
        def _lint(name=name, values=values) -> None:
            problems = lint_problems(lint(values), 2)
            R.check(not problems, f"lint {name}: no warnings or errors", "; ".join(problems))
        R.run(f"lint {name}", _lint)

    print("--- render and validate")
    binary = find_binary()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"facevault-chart-check-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for name, values in GOOD_SETS.items():
            def _one(name=name, values=values) -> None:
                rendered = render(values)
                docs = manifests(rendered)
                kinds = sorted(d["kind"] for _, d in docs)
                print(f"  {name}: {', '.join(kinds)}")
                validate_schema(name, docs)
                check_no_secrets(name, rendered, docs)
                check_deployment(name, values, rendered, docs)
                check_service(name, values, docs)
                check_optional(name, values, rendered, docs)
                if binary and servable(values):
                    check_service_accepts(name, docs, binary, tmp)
            R.run(f"render {name}", _one)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if binary:
        print(f"  rendered configs fed to {os.path.relpath(binary, REPO)}")
    else:
        R.notes.append("no facevault binary found: the service's own config check was skipped")

    print("--- audit anchors")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        R.run("audit anchors", lambda: check_anchors(binary, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("--- secure defaults; the READMEs' count of value sets")
    R.run("secure defaults", check_secure_defaults)
    R.run("docs count", check_docs_count)

    print("--- check-config on the rendered facevault.toml")
    R.run("check-config", lambda: check_config_on_rendered(binary))

    print("--- checksum/config rolls the pods")

    def _checksum() -> None:
        def checksum(values: dict[str, Any]) -> str:
            dep = one(manifests(render(values)), "Deployment")
            return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        base = checksum(BASE)
        R.check(checksum(deep_merge(BASE, {"limits": {"requestTimeoutMs": 6000}})) != base,
                "checksum changes when a config value changes")
        R.check(checksum(deep_merge(BASE, {"models": [MODEL]})) != base, "checksum changes when a model is added")
        R.check(checksum(deep_merge(BASE, {"keys": {"epochDays": 5}})) != base,
                "checksum changes when keys.epochDays changes")
        R.check(checksum(deep_merge(BASE, {"replicaCount": 3})) == base,
                "checksum stays when only the replica count changes")
    R.run("checksum", _checksum)

    print("--- bad values are refused")
    for name, values in BAD_SETS.items():
        try:
            render(values)
            R.check(False, f"render refuses {name}", "it rendered")
        except helm.HelmError as exc:
            lines = [s.strip() for s in str(exc).strip().splitlines() if s.strip()]
            R.check(True, f"render refuses {name}")
            if name in SCHEMA_PATHS:
                R.check(isinstance(exc, helm.HelmValuesError) and f"at '{SCHEMA_PATHS[name]}" in str(exc),
                        f"the values schema refuses {name} at {SCHEMA_PATHS[name]}", lines[-1] if lines else "")
            if name in FIX_MESSAGES:
                R.check(FIX_MESSAGES[name] in str(exc), f"refusal of {name} says {FIX_MESSAGES[name]!r}",
                        lines[-1] if lines else "")
            print(f"  refused {name}: {type(exc).__name__}: {lines[-1] if lines else ''}")
        except Exception as exc:  # noqa: BLE001
            R.check(False, f"render refuses {name} with a Helm error", f"{type(exc).__name__}: {exc}")
    print("--- key epochs: the chart's bound is the shortest working-day span")
    R.run("epoch bound", check_epoch_bound)

    for name in LINT_BAD:
        def _lint_bad(name=name) -> None:
            errors = lint_problems(lint(BAD_SETS[name]), 3)
            R.check(bool(errors), f"lint reports {name} as an error")
        R.run(f"lint {name}", _lint_bad)

    elapsed = time.monotonic() - started
    print("--- summary")
    for note in R.notes:
        print(f"  note: {note}")
    print(f"  {len(GOOD_SETS)} value sets rendered (and the audit anchor set), {len(BAD_SETS)} bad value sets, "
          f"{elapsed:.1f} s")
    for failure in R.failures:
        print(f"  FAILED {failure}")
    print(f"chart: {R.passed} passed, {len(R.failures)} failed")
    return 1 if R.failures else 0


if __name__ == "__main__":
    sys.exit(main())
