#!/usr/bin/env python3
"""Validates rendered manifests of the chat chart, offline.

Usage: validate_manifests.py [--kubernetes-version V]... [--expect-kind KIND]... FILE...

Every object is checked against the Kubernetes JSON schemas shipped inside the
`kubernetes-validate` package (strict: unknown fields are errors), for each version given.
Custom resources have no schema there: a ServiceMonitor and a PrometheusRule are checked against
the small schemas in schemas/ next to this script; any other kind without a schema is an error,
so that nothing goes unchecked by accident. Then the chart's own rules (secure pod settings of
every Deployment and Pod, probes, the ServiceAccount, presence's replicas and lease, the
gateway's drain time, NetworkPolicies covering every role) are checked on the objects.

Exits 1 with one line per problem, 0 when every file passes.
"""

import argparse
import json
import pathlib
import re
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

HERE = pathlib.Path(__file__).resolve().parent
CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): HERE / "schemas" / "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): HERE / "schemas" / "prometheusrule.json",
}


def schema_problems(obj, versions):
    """Problems of one object against the Kubernetes (or our custom) schemas."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CUSTOM_SCHEMAS:
        schema = json.loads(CUSTOM_SCHEMAS[key].read_text())
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{path_of(e)}: {e.message} (schema {CUSTOM_SCHEMAS[key].name})" for e in validator.iter_errors(obj)]
    problems = []
    for version in versions:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            problems.append(f"{path_of(e)}: {e.message} (Kubernetes {e.version})")
        except kv.SchemaNotFoundError as e:
            problems.append(f"no schema: {e.message}")
    return problems


def path_of(error):
    return ".".join(str(p) for p in error.absolute_path) or "(root)"


# The units of the binary's durations (humantime 2), in seconds.
UNITS = {
    **dict.fromkeys(["nanos", "nsec", "ns"], 1e-9),
    **dict.fromkeys(["usec", "us", "µs"], 1e-6),
    **dict.fromkeys(["millis", "msec", "ms"], 1e-3),
    **dict.fromkeys(["seconds", "second", "secs", "sec", "s"], 1),
    **dict.fromkeys(["minutes", "minute", "mins", "min", "m"], 60),
    **dict.fromkeys(["hours", "hour", "hrs", "hr", "h"], 3600),
    **dict.fromkeys(["days", "day", "d"], 86400),
    **dict.fromkeys(["weeks", "week", "wks", "wk", "w"], 7 * 86400),
    **dict.fromkeys(["months", "month", "M"], 2_630_016),
    **dict.fromkeys(["years", "year", "yrs", "yr", "y"], 31_557_600),
}
DURATION_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Zµ]+)")


def duration_seconds(text):
    """Seconds of a duration as the binary parses it (humantime): "10s", "1m30s", "500ms"."""
    total, at = 0.0, 0
    while at < len(text):
        part = DURATION_PART.match(text, at)
        if not part or part.group(2) not in UNITS:
            raise ValueError(f"not a duration: {text!r}")
        total += float(part.group(1)) * UNITS[part.group(2)]
        at = part.end()
    if not text:
        raise ValueError("empty duration")
    return total


def rule_problems(objs):
    """The chart's own rules, over all objects of one rendering."""
    problems = []
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    configmaps = [o for o in objs if o["kind"] == "ConfigMap"]
    settings = configmaps[0].get("data", {}) if configmaps else {}

    pods = [(f"Deployment {name}", dep["spec"]["template"]["spec"]) for name, dep in deployments.items()]
    pods += [(f"Pod {o['metadata']['name']}", o["spec"]) for o in objs if o["kind"] == "Pod"]
    accounts = {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"}
    for where, pod in pods:
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) == 0:
            problems.append(f"{where}: pod must run as non-root with a non-zero runAsUser")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
        for c in pod.get("initContainers", []) + pod["containers"]:
            csc = c.get("securityContext", {})
            if not (
                csc.get("readOnlyRootFilesystem") is True
                and csc.get("allowPrivilegeEscalation") is False
                and "ALL" in csc.get("capabilities", {}).get("drop", [])
            ):
                problems.append(
                    f"{where}, container {c['name']}: needs readOnlyRootFilesystem, "
                    "no privilege escalation and capabilities drop ALL"
                )
            if not c.get("resources", {}).get("requests"):
                problems.append(f"{where}, container {c['name']}: no resource requests")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: must not mount a service account token (no role calls the API)")
        account = pod.get("serviceAccountName", "default")
        if accounts and account not in accounts:
            problems.append(f"{where}: runs as ServiceAccount {account}, not the rendered {sorted(accounts)}")

    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        where = f"Deployment {name}"
        for c in pod["containers"]:
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = c.get(probe, {}).get("httpGet", {})
                if got.get("path") != path or got.get("port") != "http":
                    problems.append(f"{where}, container {c['name']}: {probe} must GET {path} on port http")
        role = dep["metadata"]["labels"].get("app.kubernetes.io/component")
        if role == "presence":
            if dep["spec"].get("replicas", 1) < 1:
                problems.append(f"{where}: presence needs at least one replica")
            if duration_seconds(settings.get("CHAT_PRESENCE_LEASE", "5s")) < 1:
                problems.append(f"{where}: CHAT_PRESENCE_LEASE must be at least 1s (the binary refuses less)")
        if role == "gateway":
            grace = duration_seconds(settings.get("CHAT_SHUTDOWN_GRACE", "10s"))
            if pod.get("terminationGracePeriodSeconds", 30) <= grace:
                problems.append(f"{where}: terminationGracePeriodSeconds must exceed CHAT_SHUTDOWN_GRACE ({grace}s)")
            env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
            field = env.get("CHAT_GATEWAY_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field != "metadata.name":
                problems.append(f"{where}: CHAT_GATEWAY_ID must be the pod name (downward API)")

    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    for name, dep in deployments.items() if policies else ():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        port = dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        selecting = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
        if not selecting:
            problems.append(f"Deployment {name}: no NetworkPolicy selects its pods")
        elif not any(port == q.get("port") for p in selecting for rule in p["spec"].get("ingress", []) for q in rule.get("ports", [])):
            problems.append(f"Deployment {name}: its NetworkPolicies do not let traffic in on port {port}")

    for o in objs:
        if o["kind"] == "HorizontalPodAutoscaler":
            target = o["spec"]["scaleTargetRef"]["name"]
            if target not in deployments:
                problems.append(f"HorizontalPodAutoscaler {o['metadata']['name']}: no Deployment {target}")
            elif "replicas" in deployments[target]["spec"]:
                problems.append(f"Deployment {target}: sets replicas although an autoscaler owns them")
        if o["kind"] == "PodDisruptionBudget":
            selector = o["spec"]["selector"]["matchLabels"]
            if not any(
                selector.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values()
            ):
                problems.append(f"PodDisruptionBudget {o['metadata']['name']}: selects no Deployment's pods")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", "-k", action="append", dest="versions")
    parser.add_argument("--expect-kind", action="append", default=[], help="a kind that must be rendered")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    versions = args.versions or [kv.latest_version()]

    failed = False
    for name in args.files:
        with open(name) as f:
            objs = [o for o in yaml.safe_load_all(f) if o]
        problems = []
        for obj in objs:
            label = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
            problems += [f"{label}: {p}" for p in schema_problems(obj, versions)]
        problems += rule_problems(objs)
        kinds = {o["kind"] for o in objs}
        problems += [f"expected a {k}, none rendered" for k in args.expect_kind if k not in kinds]
        for p in problems:
            print(f"{name}: {p}", file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            print(f"{name}: {len(objs)} objects valid (Kubernetes {', '.join(versions)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
