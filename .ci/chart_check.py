#!/usr/bin/env python3
"""CI checks of charts/message-streaming-app, offline.

1. helm lint --strict with the default values and with ci/all-on-values.yaml
   (every optional part switched on);
2. the values schema rejects bad values, and the chart's own guards refuse
   contradicting ones;
3. every rendered manifest passes `kubernetes-validate --strict` (the
   ServiceMonitor, a CRD, is skipped);
4. cross-checks: selectors match pod labels, probe and Service ports name real
   container ports, probe paths and the ServiceMonitor path are routes of the
   broker;
5. smoke: the built `tern` binary is started with exactly the env, args and
   ports of the rendered StatefulSet (persistence on, the volume a temporary
   directory) and Deployment (persistence off); every probe answers 200; SIGTERM
   makes it exit 0 well inside terminationGracePeriodSeconds.

Usage: chart_check.py TERN_BINARY
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "message-streaming-app"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
RELEASE, NAMESPACE = "tern", "messaging"
# Routes the broker serves (broker/src/admin/mod.rs); probes and scrapes must use these.
BROKER_ROUTES = {"/healthz", "/ready", "/metrics"}
# Image ENTRYPOINT and CMD (dockerfiles/message_queue/Dockerfile).
IMAGE_ENTRYPOINT, IMAGE_CMD = ["tern"], ["serve"]
# Environment the image sets (Dockerfile ENV); the Deployment's env overrides it.
IMAGE_ENV = {"BIND_ADDR": "0.0.0.0", "TCP_PORT": "9080", "HTTP_PORT": "8080",
             "LOG_FORMAT": "json", "RUST_LOG": "info"}

# Custom resources rendered by the chart, which kubernetes-validate has no schema for.
CRDS = {"ServiceMonitor", "Certificate"}

failures: list[str] = []


def check(condition: bool, message: str) -> None:
    if condition:
        print(f"  ok: {message}")
    else:
        print(f"  FAILED: {message}")
        failures.append(message)


def load_values(path: Path | None) -> dict:
    return yaml.safe_load(path.read_text()) if path else {}


def render(values: dict) -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    documents = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("_template", path)
                documents.append(document)
    return documents


def lint(values: dict, label: str) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for problem in problems + [{"error": e} for e in report.get("errors", [])]:
        print(f"    {problem}")
    check(not problems and not report.get("errors"), f"helm lint --strict ({label})")


def expect_refused(values: dict, label: str) -> None:
    chart = helm.Chart.load(str(CHART))
    try:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    except helm.HelmError as error:
        check(True, f"refused {label}: {str(error).splitlines()[0][:160]}")
        return
    check(False, f"the chart should refuse {label}")


def kubernetes_validate(documents: list[dict], label: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        files = []
        for index, document in enumerate(documents):
            if document["kind"] in CRDS:
                print(f"  skip: {document['kind']} (a CRD, no offline schema) ({label})")
                continue
            clean = {k: v for k, v in document.items() if k != "_template"}
            path = Path(directory) / f"{index:02}-{document['kind']}.yaml"
            path.write_text(yaml.safe_dump(clean))
            files.append(str(path))
        tool = Path(sys.executable).with_name("kubernetes-validate")
        result = subprocess.run([str(tool), "--strict", *files], capture_output=True, text=True)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            print(output)
        kinds = sorted({d["kind"] for d in documents if d["kind"] not in CRDS})
        check(result.returncode == 0, f"kubernetes-validate --strict: {', '.join(kinds)} ({label})")


def by_kind(documents: list[dict], kind: str) -> list[dict]:
    return [d for d in documents if d["kind"] == kind]


def subset(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def workload(documents: list[dict]) -> dict:
    """The broker's Deployment (no persistence) or StatefulSet (persistence)."""
    (found,) = by_kind(documents, "Deployment") + by_kind(documents, "StatefulSet")
    return found


def client_service(documents: list[dict]) -> dict:
    """The Service clients use (not the StatefulSet's headless one)."""
    (found,) = [s for s in by_kind(documents, "Service") if s["spec"].get("clusterIP") != "None"]
    return found


def check_storage(documents: list[dict], label: str) -> None:
    deployment = workload(documents)
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    if deployment["kind"] == "Deployment":
        check(env["STORE_URL"] == "mem://" and "volumeClaimTemplates" not in deployment["spec"],
              f"without persistence: a Deployment with STORE_URL=mem:// ({label})")
        return
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    claims = [c["metadata"]["name"] for c in deployment["spec"].get("volumeClaimTemplates", [])]
    check(claims == ["data"] and "data" in mounts,
          f"StatefulSet mounts its claim template 'data' ({label})")
    check(env["STORE_URL"] == f"file://{mounts.get('data')}",
          f"STORE_URL {env['STORE_URL']} is the volume's mount path ({label})")
    check(pod["spec"]["securityContext"].get("fsGroup") is not None,
          f"fsGroup set, so the non-root broker can write the volume ({label})")
    headless = [s for s in by_kind(documents, "Service")
                if s["metadata"]["name"] == deployment["spec"]["serviceName"]]
    check(len(headless) == 1 and headless[0]["spec"].get("clusterIP") == "None"
          and subset(headless[0]["spec"]["selector"], pod["metadata"]["labels"]),
          f"serviceName names a headless Service selecting the pods ({label})")


def cross_check(documents: list[dict], label: str) -> None:
    deployment = workload(documents)
    service = client_service(documents)
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}

    check(subset(deployment["spec"]["selector"]["matchLabels"], pod_labels),
          f"{deployment['kind']} selector matches its pod labels ({label})")
    check_storage(documents, label)
    check(subset(service["spec"]["selector"], pod_labels),
          f"Service selector matches the pod labels ({label})")
    for pdb in by_kind(documents, "PodDisruptionBudget"):
        check(subset(pdb["spec"]["selector"]["matchLabels"], pod_labels),
              f"PodDisruptionBudget selector matches the pod labels ({label})")
        budget = {k: v for k, v in pdb["spec"].items() if k in ("minAvailable", "maxUnavailable")}
        check(len(budget) == 1, f"PodDisruptionBudget sets exactly one of minAvailable/maxUnavailable: {budget} ({label})")
    for port in service["spec"]["ports"]:
        check(port["targetPort"] in port_names,
              f"Service port {port['name']} targets container port {port['targetPort']!r} ({label})")
    check(port_names.get("tern") == int(env["TCP_PORT"]) and port_names.get("http") == int(env["HTTP_PORT"]),
          f"container ports equal TCP_PORT/HTTP_PORT ({label})")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        check(probe is not None, f"{kind} present ({label})")
        if probe:
            get = probe["httpGet"]
            check(get["port"] in port_names, f"{kind} port {get['port']!r} is a container port ({label})")
            check(get["path"] in BROKER_ROUTES, f"{kind} path {get['path']} is a broker route ({label})")
    check(container["livenessProbe"]["httpGet"]["path"] == "/healthz"
          and container["startupProbe"]["httpGet"]["path"] == "/healthz"
          and container["readinessProbe"]["httpGet"]["path"] == "/ready",
          f"startup and liveness on /healthz, readiness on /ready ({label})")
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    check(grace > int(env["SHUTDOWN_GRACE_SECS"]),
          f"terminationGracePeriodSeconds {grace} > SHUTDOWN_GRACE_SECS {env['SHUTDOWN_GRACE_SECS']} ({label})")
    security = container["securityContext"]
    check(security.get("readOnlyRootFilesystem") is True
          and security.get("allowPrivilegeEscalation") is False
          and security.get("capabilities", {}).get("drop") == ["ALL"]
          and pod["spec"]["securityContext"].get("runAsNonRoot") is True,
          f"non-root, read-only root fs, all capabilities dropped ({label})")
    check_security(documents, deployment, container, env, label)
    env_keys = set(env)
    settings = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
                if line and not line.startswith("#") and "=" in line}
    check(settings <= env_keys, f"every .env.example setting is set from values ({label})")
    for monitor in by_kind(documents, "ServiceMonitor"):
        service_ports = {p["name"] for p in service["spec"]["ports"]}
        check(subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]),
              f"ServiceMonitor selects the Service ({label})")
        for endpoint in monitor["spec"]["endpoints"]:
            check(endpoint["port"] in service_ports and endpoint["path"] in BROKER_ROUTES,
                  f"ServiceMonitor scrapes {endpoint['port']}{endpoint['path']} ({label})")
    tests = [d for d in by_kind(documents, "Pod")
             if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    check(len(tests) == 1, f"one helm test hook pod ({label})")
    for test in tests:
        check(not subset(service["spec"]["selector"], test["metadata"]["labels"]),
              f"the Service does not select the test pod ({label})")
        command = " ".join(test["spec"]["containers"][0]["args"])
        check("tern sub" in command and "tern pub" in command,
              f"the test pod publishes and subscribes with the tern CLI ({label})")
        server = next(e["value"] for e in test["spec"]["containers"][0]["env"] if e["name"] == "TERN_SERVER")
        check(server == f"{service['metadata']['name']}:{values_service_port(service, 'tern')}",
              f"the test pod connects through the Service ({server}) ({label})")


def check_security(documents: list[dict], deployment: dict, container: dict, env: dict, label: str) -> None:
    """Security files come from mounted Secrets; probes follow HTTP_TLS; the test pod
    authenticates and trusts the CA when the broker requires it."""
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for setting in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "AUTH_FILE", "HTTP_AUTH_TOKEN_FILE"):
        path = env.get(setting, "")
        if not path:
            continue
        directory = str(Path(path).parent)
        check(mounts.get(directory) in secrets,
              f"{setting}={path} is in a mounted Secret ({secrets.get(mounts.get(directory))}) ({label})")
    https = env.get("HTTP_TLS") == "true"
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        scheme = container[kind]["httpGet"].get("scheme", "HTTP")
        check(scheme == ("HTTPS" if https else "HTTP"), f"{kind} scheme {scheme} follows HTTP_TLS ({label})")
    for certificate in by_kind(documents, "Certificate"):
        check(certificate["spec"]["secretName"] in secrets.values(),
              f"the Certificate fills the Secret the broker mounts ({certificate['spec']['secretName']}) ({label})")
    for test in [d for d in by_kind(documents, "Pod")
                 if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]:
        names = {e["name"] for e in test["spec"]["containers"][0]["env"]}
        if env.get("AUTH_FILE"):
            check("TERN_TOKEN" in names, f"the test pod sends a token (AUTH_FILE set) ({label})")
        if env.get("TLS_CERT_FILE"):
            check({"TERN_TLS_CA", "TERN_TLS_SERVER_NAME"} <= names, f"the test pod speaks TLS ({label})")


def values_service_port(service: dict, name: str) -> int:
    return next(p["port"] for p in service["spec"]["ports"] if p["name"] == name)


def http_status(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def smoke(documents: list[dict], binary: str) -> None:
    deployment = workload(documents)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    argv = [binary] + container.get("command", IMAGE_ENTRYPOINT)[1:] + container.get("args", IMAGE_CMD)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **IMAGE_ENV}
    env.update({e["name"]: e["value"] for e in container["env"]})
    # The volume's mount path, here a temporary directory.
    data = tempfile.TemporaryDirectory()
    if env.get("STORE_URL", "mem://").startswith("file://"):
        env["STORE_URL"] = f"file://{data.name}"
    print(f"  starting: {' '.join(argv)} with {len(container['env'])} variables from the {deployment['kind']}")
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        probes = [(kind, container[kind]["httpGet"]) for kind in ("startupProbe", "livenessProbe", "readinessProbe")]
        deadline = time.monotonic() + 20
        statuses: dict[str, int] = {}
        while time.monotonic() < deadline and process.poll() is None:
            try:
                statuses = {kind: http_status(ports[get["port"]], get["path"]) for kind, get in probes}
            except OSError:
                statuses = {}
            if statuses and all(status == 200 for status in statuses.values()):
                break
            time.sleep(0.1)
        for kind, get in probes:
            check(statuses.get(kind) == 200,
                  f"{kind} {get['path']} on port {get['port']} ({ports[get['port']]}) answers {statuses.get(kind)}")
        check(http_status(ports["http"], "/metrics") == 200, "/metrics answers 200")
        grace = pod["terminationGracePeriodSeconds"]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - started
        check(code == 0, f"exit code after SIGTERM: {code}")
        if env["STORE_URL"].startswith("file://"):
            check((Path(data.name) / "clean").exists(), "the store was closed cleanly (its clean mark is written)")
        check(elapsed < grace / 2,
              f"stopped in {elapsed:.2f} s, well inside terminationGracePeriodSeconds ({grace} s)")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        errors = process.stderr.read() if process.stderr else ""
        if failures and errors:
            print(errors[-2000:])


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    binary = sys.argv[1]
    print(f"helm SDK {helm.helm_sdk_version()}")
    defaults, all_on = load_values(None), load_values(ALL_ON)

    print("\n-- 1. helm lint (strict)")
    lint(defaults, "default values")
    lint(all_on, "ci/all-on-values.yaml")

    print("\n-- 2. values schema and guards")
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(all_on)
    check(True, "ci/all-on-values.yaml satisfies the schema")
    for label, bad in [
        ("deliveryMode: fanout", {"broker": {"deliveryMode": "fanout"}}),
        ("replicaCount: -1", {"replicaCount": -1}),
        ("tcpPort: 70000", {"broker": {"tcpPort": 70000}}),
        ("service.type: Ingress", {"service": {"type": "Ingress"}}),
        ("a misspelled key (brokr)", {"brokr": {"tcpPort": 1}}),
        ("maxConsumers as a string", {"broker": {"maxConsumers": "ten"}}),
        ("storeFsync: sometimes", {"broker": {"storeFsync": "sometimes"}}),
        ("persistence.size: lots", {"persistence": {"size": "lots"}}),
        ("persistence.mountPath relative", {"persistence": {"mountPath": "data"}}),
        ("security.tls.secretName with a space", {"security": {"tls": {"secretName": "my secret"}}}),
        ("security.auth.enabled as a string", {"security": {"auth": {"enabled": "yes"}}}),
    ]:
        try:
            chart.validate_schema(bad)
            check(False, f"the schema should reject {label}")
        except helm.HelmError as error:
            check(True, f"schema rejects {label}: {' '.join(str(error).split())[:150]}")
    expect_refused({"terminationGracePeriodSeconds": 10, "broker": {"shutdownGraceSecs": 10}},
                   "terminationGracePeriodSeconds not above shutdownGraceSecs")
    expect_refused({"security": {"tls": {"enabled": True}}},
                   "TLS without a Secret or cert-manager")
    expect_refused({"security": {"auth": {"enabled": True}}}, "auth without its Secret")
    expect_refused({"security": {"auth": {"enabled": True, "secretName": "auth"}}},
                   "auth with a helm test but no test token")
    expect_refused({"security": {"tls": {"clientAuth": True}}}, "clientAuth without TLS")

    in_memory = {"persistence": {"enabled": False}}
    lint(in_memory, "persistence.enabled=false")
    rendered = {"default values": render(defaults), "all-on values": render(all_on),
                "persistence off": render(in_memory)}
    kinds_all_on = {d["kind"] for d in rendered["all-on values"]}
    check({"StatefulSet", "Service", "ServiceAccount", "PodDisruptionBudget", "ServiceMonitor", "Pod",
           "Certificate"} <= kinds_all_on,
          f"all-on values render every object: {sorted(kinds_all_on)}")
    check(workload(rendered["default values"])["kind"] == "StatefulSet"
          and workload(rendered["persistence off"])["kind"] == "Deployment",
          "persistence on (default) renders a StatefulSet, off a Deployment")

    print("\n-- 3. kubernetes-validate --strict")
    for label, documents in rendered.items():
        kubernetes_validate(documents, label)

    print("\n-- 4. cross-checks")
    for label, documents in rendered.items():
        cross_check(documents, label)

    print("\n-- 5. smoke: the binary with the workload's env, args and ports")
    smoke(rendered["default values"], binary)
    smoke(rendered["persistence off"], binary)

    if failures:
        print(f"\n{len(failures)} chart check(s) FAILED:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("\nchart checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
