#!/usr/bin/env python3
"""Validates rendered manifests of the chat chart, offline.

Usage: validate_manifests.py [--kubernetes-version V]... [--expect-kind KIND]... FILE...

Every object is checked against the Kubernetes JSON schemas shipped inside the
`kubernetes-validate` package (strict: unknown fields are errors), for each version given.
Custom resources have no schema there: a ServiceMonitor is checked against the small schema in
schemas/servicemonitor.json next to this script; any other kind without a schema is an error,
so that nothing goes unchecked by accident. Then the chart's own rules (secure pod settings,
probes, presence's replicas and lease, the gateway's drain time) are checked on the objects.

Exits 1 with one line per problem, 0 when every file passes.
"""

import argparse
import json
import pathlib
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

HERE = pathlib.Path(__file__).resolve().parent
CUSTOM_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): HERE / "schemas" / "servicemonitor.json"}


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


def duration_seconds(text):
    """Seconds of a duration like "10s", "2m", "1m30s" (the forms the chart writes)."""
    total, number = 0, ""
    for ch in text:
        if ch.isdigit():
            number += ch
        elif ch in "smh" and number:
            total += int(number) * {"s": 1, "m": 60, "h": 3600}[ch]
            number = ""
        else:
            raise ValueError(f"not a duration: {text!r}")
    if number:
        raise ValueError(f"duration without unit: {text!r}")
    return total


def rule_problems(objs):
    """The chart's own rules, over all objects of one rendering."""
    problems = []
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    configmaps = [o for o in objs if o["kind"] == "ConfigMap"]
    settings = configmaps[0].get("data", {}) if configmaps else {}

    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        where = f"Deployment {name}"
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
