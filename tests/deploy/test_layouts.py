"""What each layout promises: the base's one replica on the memory store, the HA overlays' replicas sharing work
through Redis, the rightsizer's dry run with workload identity, the examples' triggers; and that the services
accept the settings, flags and trigger metadata the manifests give them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rightsizer.cli import build_parser as rightsizer_parser
from rightsizer.settings import settings_from_mapping
from scaler_service.__main__ import build_parser as scaler_parser
from scaler_service.settings import Settings
from scaler_service.settings_flags import settings_from_args
from scaler_service.trigger import KEDA_KEYS, KNOWN_KEYS, TriggerParser
from tests.deploy.render import MANIFESTS, Obj, container, load_all, one, pod_spec, render

SCALER_LABELS = {"app.kubernetes.io/name": "foresight-scaler"}


def _args(workload: Obj) -> list[str]:
    c = container(workload)
    return [*c.get("command", []), *c.get("args", [])]


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def _volume_for(workload: Obj, path: str) -> Obj:
    """The pod volume mounted at the folder holding ``path``."""
    c = container(workload)
    mount = max(
        (m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")),
        key=lambda m: len(m["mountPath"]),
    )
    volume: Obj = next(v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"])
    return volume


def _scaler_settings_from(objects: tuple[Obj, ...], tmp_path: Path) -> Settings:
    """Parse the Deployment's command line with the scaler's own parser, its config file from the ConfigMap."""
    deployment = one(objects, "Deployment", "foresight-scaler")
    args = _args(deployment)
    assert args[:2] == ["foresight-scaler", "serve"]
    config = tmp_path / "config.yaml"
    config.write_text(one(objects, "ConfigMap", "foresight-scaler-config")["data"]["config.yaml"], encoding="utf-8")
    argv = [a.replace("/etc/foresight/config.yaml", str(config)) for a in args[1:]]
    parsed = scaler_parser().parse_args(argv)
    return settings_from_args(parsed, env={})


# --- scaler: base --------------------------------------------------------------------------------------------------


def test_base_runs_one_replica_on_the_memory_store(tmp_path: Path) -> None:
    objects = render("base")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert _flag(_args(deployment), "--store") in (None, "memory")
    assert {o["kind"] for o in objects}.isdisjoint({"StatefulSet", "PodDisruptionBudget", "Namespace"})
    settings = _scaler_settings_from(objects, tmp_path)
    assert settings.grpc_port == 9090 and settings.http_port == 8080


def test_scaler_pod_is_non_root_read_only_with_grpc_probes_and_tmp() -> None:
    for layout in ("base", "overlays/ha"):
        deployment = one(render(layout), "Deployment")
        pod = pod_spec(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        c = container(deployment)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["readinessProbe"]["grpc"]["port"] == 9090 and c["livenessProbe"]["grpc"]["port"] == 9090
        assert {"name": "TMPDIR", "value": "/tmp"} in c["env"]
        assert _volume_for(deployment, "/tmp/x")["emptyDir"] is not None
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        assert "cpu" not in c["resources"]["limits"]  # no throttling under KEDA's deadlines


def test_service_is_headless_and_the_network_policy_admits_only_keda_and_monitoring() -> None:
    objects = render("base")
    service = one(objects, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == SCALER_LABELS
    ports = {p["name"]: p["containerPort"] for p in container(one(objects, "Deployment"))["ports"]}
    assert {p["targetPort"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 9090, "metrics": 8080}
    assert ports == {"grpc": 9090, "metrics": 8080}

    policy = one(objects, "NetworkPolicy", "foresight-scaler")
    assert policy["spec"]["podSelector"]["matchLabels"] == SCALER_LABELS
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {tuple(p["port"] for p in rule["ports"]): rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(rules) == {("grpc",), ("metrics",)}
    (grpc_peer,) = rules[("grpc",)]
    assert grpc_peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "keda-operator"}
    assert grpc_peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}
    (http_peer,) = rules[("metrics",)]
    assert http_peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def test_rbac_is_read_only_and_bound_to_the_scaler_account() -> None:
    objects = render("base")
    role = one(objects, "ClusterRole")
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (subject,) = binding["subjects"]
    assert subject == {
        "kind": "ServiceAccount",
        "name": pod_spec(one(objects, "Deployment"))["serviceAccountName"],
        "namespace": "keda",
    }


# --- scaler: HA ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("layout", "scheme"), [("overlays/ha", "redis"), ("overlays/ha-external-redis", "rediss")])
def test_ha_replicas_share_work_through_redis(layout: str, scheme: str, tmp_path: Path) -> None:
    objects = render(layout)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = _args(deployment)
    store = _flag(args, "--store")
    assert store is not None and store.startswith(f"{scheme}://"), store
    assert _flag(args, "--max-connection-age") == "5m"
    password_file = _flag(args, "--redis-password-file")
    assert password_file is not None
    assert _volume_for(deployment, password_file)["secret"]["secretName"] == "foresight-redis"

    spread = {c["topologyKey"]: c for c in pod_spec(deployment)["topologySpreadConstraints"]}
    host = spread["kubernetes.io/hostname"]
    assert host["whenUnsatisfiable"] == "DoNotSchedule" and host["maxSkew"] == 1
    assert host["labelSelector"]["matchLabels"] == SCALER_LABELS
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == SCALER_LABELS
    assert pdb["spec"]["maxUnavailable"] == 1 < deployment["spec"]["replicas"]

    settings = _scaler_settings_from(objects, tmp_path)  # the scaler accepts every flag the overlay adds
    assert settings.grpc_port == 9090


def test_in_cluster_redis_is_persistent_password_protected_and_reachable_only_from_the_scaler() -> None:
    objects = render("overlays/ha")
    redis = one(objects, "StatefulSet", "foresight-redis")
    assert redis["spec"]["replicas"] == 1
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert any(
        m["name"] == claim["metadata"]["name"] and m["mountPath"] == "/data" for m in container(redis)["volumeMounts"]
    )
    config = one(objects, "ConfigMap", "foresight-redis")["data"]["redis.conf"]
    assert "appendonly yes" in config and "dir /data" in config and "maxmemory-policy noeviction" in config
    assert "requirepass" not in config  # the password comes from the Secret at start-up
    assert _volume_for(redis, "/etc/redis-auth/password")["secret"]["secretName"] == "foresight-redis"
    assert container(redis)["securityContext"]["readOnlyRootFilesystem"] is True

    service = one(objects, "Service", "foresight-redis")
    assert service["metadata"]["name"] == redis["spec"]["serviceName"]
    store = _flag(_args(one(objects, "Deployment")), "--store")
    assert store == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"

    policy = one(objects, "NetworkPolicy", "foresight-redis")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": SCALER_LABELS}}]
    assert one(render("overlays/ha-external-redis"), "Deployment")  # and the external variant runs no Redis
    assert not [o for o in render("overlays/ha-external-redis") if o["kind"] == "StatefulSet"]


def test_mtls_component_turns_tls_on_and_moves_the_probes_to_http(tmp_path: Path) -> None:
    overlay = tmp_path / "mtls"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS / "base", overlay)],
                "components": [os.path.relpath(MANIFESTS / "components" / "mtls", overlay)],
            }
        ),
        encoding="utf-8",
    )
    objects = render(str(overlay))
    deployment = one(objects, "Deployment")
    args = _args(deployment)
    secret = _volume_for(deployment, str(_flag(args, "--tls-cert")))["secret"]["secretName"]
    certificate = one(objects, "Certificate")
    assert certificate["spec"]["secretName"] == secret and certificate["spec"]["usages"] == ["server auth"]
    assert "foresight-scaler.keda" in certificate["spec"]["dnsNames"]
    assert _flag(args, "--tls-client-ca") == "/etc/foresight-tls/ca.crt"
    c = container(deployment)
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    settings = _scaler_settings_from(objects, tmp_path)
    assert settings.tls_enabled and settings.tls_client_ca == Path("/etc/foresight-tls/ca.crt")


# --- rightsizer ------------------------------------------------------------------------------------------------------


def _rightsizer_config(objects: tuple[Obj, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        one(objects, "ConfigMap", "foresight-rightsizer-config")["data"]["config.yaml"]
    )
    return doc


def test_rightsizer_is_a_dry_run_with_one_line_to_change() -> None:
    objects = render("rightsizer")
    text = one(objects, "ConfigMap", "foresight-rightsizer-config")["data"]["config.yaml"]
    assert [line for line in text.splitlines() if line.startswith("dry_run:")] == ["dry_run: true"]
    config = _rightsizer_config(objects)
    assert settings_from_mapping(config).dry_run is True  # the rightsizer accepts the whole policy file
    live = yaml.safe_load(text.replace("dry_run: true", "dry_run: false"))
    assert settings_from_mapping(live).dry_run is False  # and that one line is all it takes
    cron = one(objects, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    args = _args(cron)
    assert args[0] == "rightsizer" and "--apply" not in args
    parsed = rightsizer_parser().parse_args(args[1:])  # every flag is one the rightsizer knows
    assert parsed.command == "recommend"
    assert _flag(args, "--pushgateway")


def test_rightsizer_uses_workload_identity_and_keeps_its_audit_log_on_a_volume() -> None:
    objects = render("rightsizer")
    cron = one(objects, "CronJob")
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    account = one(objects, "ServiceAccount", pod_spec(cron)["serviceAccountName"])
    assert {"azure.workload.identity/client-id", "azure.workload.identity/tenant-id"} <= set(
        account["metadata"]["annotations"]
    )
    audit_log = _rightsizer_config(objects)["audit_log"]
    claim = _volume_for(cron, audit_log)["persistentVolumeClaim"]["claimName"]
    assert one(objects, "PersistentVolumeClaim", claim)
    assert container(cron)["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec(cron)["securityContext"]["runAsUser"] == 10001


def test_sharded_rightsizer_is_an_indexed_job_with_one_shard_per_index() -> None:
    objects = render("overlays/rightsizer-sharded")
    job = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    shard = _flag(_args(one(objects, "CronJob")), "--shard")
    assert shard == f"$(JOB_COMPLETION_INDEX)/{job['completions']}"
    mounts = {m["mountPath"]: m for m in container(one(objects, "CronJob"))["volumeMounts"]}
    audit_dir = str(Path(_rightsizer_config(objects)["audit_log"]).parent)
    assert mounts[audit_dir]["subPathExpr"] == "shard-$(JOB_COMPLETION_INDEX)"  # one hash chain per shard
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # shards run in parallel on any node
    assert job["parallelism"] > 1


# --- examples --------------------------------------------------------------------------------------------------------


def _examples() -> list[Obj]:
    return [o for p in sorted((MANIFESTS / "examples").rglob("*.yaml")) for o in load_all(p)]


def test_every_example_trigger_is_accepted_by_the_scaler_and_calls_the_service() -> None:
    parser = TriggerParser(default_address=Settings().default_address, allowed_addresses=Settings().allowed_addresses)
    service = one(render("base"), "Service")
    address = f"{service['metadata']['name']}.{service['metadata']['namespace']}:9090"
    types = []
    for obj in _examples():
        if obj["kind"] != "ScaledObject":
            continue
        for trigger in obj["spec"]["triggers"]:
            types.append(trigger["type"])
            if trigger["type"] not in ("external", "external-push"):
                continue
            metadata = trigger["metadata"]
            assert metadata["scalerAddress"] == address
            assert set(metadata) <= KNOWN_KEYS | KEDA_KEYS, set(metadata) - KNOWN_KEYS - KEDA_KEYS
            parser.parse(metadata)  # raises TriggerError naming the key on anything the scaler refuses
    assert {"external", "external-push", "prometheus"} <= set(types)


def test_examples_show_fallback_with_a_reactive_companion_observe_mode_and_an_opt_out() -> None:
    scaled = {o["metadata"]["name"]: o for o in _examples() if o["kind"] == "ScaledObject"}
    with_fallback = [o for o in scaled.values() if "fallback" in o["spec"]]
    assert with_fallback
    for obj in with_fallback:
        types = {t["type"] for t in obj["spec"]["triggers"]}
        assert "external" in types and "prometheus" in types  # the HPA takes the max: reactive is the floor
        assert obj["spec"]["fallback"]["failureThreshold"] >= 1
    assert any(t["metadata"].get("mode") == "observe" for o in scaled.values() for t in o["spec"]["triggers"])
    opted_out = [o for o in _examples() if o["kind"] == "Deployment"]
    assert opted_out and all(
        o["metadata"]["annotations"]["finops.ai/optimization-enabled"] == "false" for o in opted_out
    )
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in scaled.values()}
    assert all(o["metadata"]["name"] in targets for o in opted_out)  # scaled by one of the examples


def test_mtls_example_chains_certificate_secret_trigger_authentication_and_scaled_object() -> None:
    examples = _examples()
    auth = one(examples, "TriggerAuthentication")
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(params) == {"caCert", "tlsClientCert", "tlsClientKey"}
    assert {ref["key"] for ref in params.values()} == {"ca.crt", "tls.crt", "tls.key"}
    client = one(examples, "Certificate", "foresight-scaler-client")
    assert {ref["name"] for ref in params.values()} == {client["spec"]["secretName"]}
    assert client["spec"]["usages"] == ["client auth"]
    issuers = {o["metadata"]["name"]: o for o in examples if o["kind"] == "ClusterIssuer"}
    assert client["spec"]["issuerRef"]["name"] in issuers
    ca = one(examples, "Certificate", "foresight-ca")
    assert ca["spec"]["isCA"] is True
    assert issuers[client["spec"]["issuerRef"]["name"]]["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    server = one(
        render("base") + tuple(load_all(MANIFESTS / "components" / "mtls" / "certificate.yaml")), "Certificate"
    )
    assert server["spec"]["issuerRef"] == client["spec"]["issuerRef"]  # both chain to the one CA
    users = [
        o
        for o in examples
        if o["kind"] == "ScaledObject"
        and any(t.get("authenticationRef", {}).get("name") == auth["metadata"]["name"] for t in o["spec"]["triggers"])
    ]
    assert users


def test_readme_deploy_commands_name_existing_kustomizations() -> None:
    readme = (MANIFESTS.parent / "README.md").read_text(encoding="utf-8")
    applied = set(re.findall(r"kubectl apply -k (manifests/[\w/-]+)", readme))
    assert applied, "README shows `kubectl apply -k` commands"
    for folder in applied:
        assert (MANIFESTS.parent / folder / "kustomization.yaml").is_file(), folder
