#!/usr/bin/env python3
"""Cross-checks a rendered overlay (`kubectl kustomize`) against what the `shlyuz` binary expects.

kubernetes-validate checks each object against its schema; this checks what no schema knows:
every target has its Deployment, Service (port `grpc`), ServiceAccount, ConfigMap, Certificate
and probes, the ports agree with each target's shlyuz.toml, the termination grace covers the
configured drain, certificates carry the participant URI SAN and the Service DNS names, and
every Secret or ConfigMap a pod mounts is rendered or listed as created outside git.

Usage: check-rendered.py RENDERED.yaml [--external-secret NAME ...]
Exits 1 listing every problem.
"""

import argparse
import sys
import tomllib

import yaml

TARGETS = {"gateway": 50051, "registry": 50052, "notify": 50053, "intake": 50054, "housing": 50055}
PARTICIPANTS = list(TARGETS) + ["ops", "jauynger-portal", "sdu"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered")
    parser.add_argument("--external-secret", action="append", default=[])
    parser.add_argument("--min-replicas", type=int, default=1)
    args = parser.parse_args()
    with open(args.rendered, encoding="utf-8") as handle:
        objects = [doc for doc in yaml.safe_load_all(handle) if doc]
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    problems: list[str] = []

    def need(kind: str, name: str) -> dict:
        found = by_kind.get(kind, {}).get(name)
        if found is None:
            problems.append(f"{kind}/{name}: missing")
            return {}
        return found

    rendered_secrets = set(by_kind.get("Secret", {}))
    certificate_secrets = {
        cert["spec"]["secretName"] for cert in by_kind.get("Certificate", {}).values()
    }
    available_secrets = rendered_secrets | certificate_secrets | set(args.external_secret)
    config_maps = by_kind.get("ConfigMap", {})

    for target, port in TARGETS.items():
        deployment = need("Deployment", target)
        need("ServiceAccount", target)
        service = need("Service", target)
        if not deployment or not service:
            continue
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        where = f"Deployment/{target}"
        if spec.get("replicas", 1) < args.min_replicas:
            problems.append(f"{where}: {spec.get('replicas', 1)} replicas, expected >= {args.min_replicas}")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: service-account token must not be mounted")
        container = pod["containers"][0]
        if container.get("args", [])[:3] != ["serve", "--target", target]:
            problems.append(f"{where}: container args {container.get('args')} do not serve {target}")
        migrate = [c for c in pod.get("initContainers", []) if c.get("args", [])[:1] == ["migrate"]]
        if not migrate or migrate[0]["args"] != ["migrate", "--target", target]:
            problems.append(f"{where}: no init container running `shlyuz migrate --target {target}`")

        config_volume = next((v for v in pod["volumes"] if v["name"] == "config"), None)
        config_text = None
        if config_volume:
            config_map = config_maps.get(config_volume["configMap"]["name"])
            if config_map:
                config_text = config_map["data"].get("shlyuz.toml")
        if config_text is None:
            problems.append(f"{where}: its ConfigMap with shlyuz.toml is not rendered")
            continue
        config = tomllib.loads(config_text)
        listen = config.get(target, {}).get("listen", "")
        if not listen.endswith(f":{port}"):
            problems.append(f"{where}: [{target}] listen = {listen!r}, expected port {port}")
        health_port = int(config.get("health", {}).get("listen", ":0").rsplit(":", 1)[1])
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(probe_name)
            if not probe or "grpc" not in probe:
                problems.append(f"{where}: no native gRPC {probe_name}")
            elif probe["grpc"]["port"] != health_port:
                problems.append(f"{where}: {probe_name} probes port {probe['grpc']['port']}, health.listen is {health_port}")
        readiness = container.get("readinessProbe", {}).get("grpc", {})
        if readiness and readiness.get("service") != "readiness":
            problems.append(f"{where}: readinessProbe must ask for service 'readiness'")
        shutdown = config.get("shutdown", {})
        needed_ms = shutdown.get("readiness_grace_ms", 0) + shutdown.get("drain_timeout_ms", 20000)
        grace_s = pod.get("terminationGracePeriodSeconds", 30)
        if grace_s * 1000 <= needed_ms:
            problems.append(f"{where}: terminationGracePeriodSeconds {grace_s} s does not cover readiness grace + drain ({needed_ms} ms)")
        if target == "gateway" and config.get("gateway", {}).get("max_connection_age_secs", 0) <= 0:
            problems.append(f"{where}: gateway.max_connection_age_secs must be set so connections rebalance")
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        if "grpc" not in ports or ports["grpc"]["port"] != port:
            problems.append(f"Service/{target}: needs port 'grpc' = {port}")

        for volume in pod["volumes"]:
            if "secret" in volume and volume["secret"]["secretName"] not in available_secrets:
                problems.append(f"{where}: Secret {volume['secret']['secretName']} is neither rendered nor listed as external")
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problems.append(f"{where}: ConfigMap {volume['configMap']['name']} is not rendered")
        for container_spec in pod["containers"] + pod.get("initContainers", []):
            for env in container_spec.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in available_secrets:
                    problems.append(f"{where}: Secret {ref['name']} is neither rendered nor listed as external")

    for participant in PARTICIPANTS:
        cert = need("Certificate", f"shlyuz-{participant}")
        if not cert:
            continue
        uris = cert["spec"].get("uris", [])
        if f"urn:shlyuz:participant:{participant}" not in uris:
            problems.append(f"Certificate/shlyuz-{participant}: no URI SAN urn:shlyuz:participant:{participant}")
        if participant in TARGETS and participant not in cert["spec"].get("dnsNames", []):
            problems.append(f"Certificate/shlyuz-{participant}: DNS name {participant} (the Service) missing")
        if cert["spec"]["issuerRef"]["name"] not in by_kind.get("Issuer", {}):
            problems.append(f"Certificate/shlyuz-{participant}: Issuer {cert['spec']['issuerRef']['name']} is not rendered")

    directory = config_maps.get("shlyuz-gateway-directory", {}).get("data", {})
    directory_text = directory.get("gateway-directory.toml")
    if directory_text is None:
        problems.append("ConfigMap/shlyuz-gateway-directory: no gateway-directory.toml")
    else:
        for participant in tomllib.loads(directory_text).get("participants", []):
            key_file = participant["signing_public_key"]
            if key_file not in directory:
                problems.append(f"ConfigMap/shlyuz-gateway-directory: participant {participant['id']} names {key_file}, which is not in the ConfigMap")

    for problem in problems:
        print(f"{args.rendered}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.rendered}: {len(objects)} objects, cross-checks passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
