"""deploy/: every shipped file is accepted by the tool that will read it (as far as this machine can run it)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from harness.system.procs import nats_server_binary
from shared.config import Settings
from shared.natsauth import authorization_block
from tests.helpers import missing_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30"


USERS_FROM_ENV = {"kb": "$KB_NATS_PASSWORD", "gateway": "$GATEWAY_NATS_PASSWORD"}


def nats_config_ok(conf: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`nats-server -c conf -t` with the environment the config refers to."""
    passwords = {"KB_NATS_PASSWORD": "kb-secret", "GATEWAY_NATS_PASSWORD": "gw-secret"}
    return subprocess.run([nats_server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True,
                          env={**os.environ, **passwords, **env})


def test_every_shipped_nats_config_asks_for_credentials_with_the_permissions_in_code() -> None:
    """deploy/ and shared/natsauth.py name the same users with the same rights; no password is written down."""
    block = authorization_block(USERS_FROM_ENV)
    configs = [conf.read_text() for conf in sorted(DEPLOY.glob("nats/*.conf"))]
    config_map = next(d for d in k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config")
    for text in (*configs, config_map["data"]["nats.conf"]):
        assert block in text and text.count("password:") == 2
    for name in ("kb", "gateway"):
        workload = next(d for d in k8s_docs() if d["kind"] in ("Deployment", "StatefulSet")
                        and d["metadata"]["name"] == name)
        env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["GAIA_NATS_USER"]["value"] == name
        assert env["GAIA_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "gaia-nats-users", "key": name}


def k8s_docs() -> list[dict]:
    return [doc for path in sorted(DEPLOY.glob("k8s/*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_every_shipped_nats_config_parses_and_syncs_always() -> None:
    configs = sorted(DEPLOY.glob("nats/*.conf"))
    assert len(configs) >= 2
    for conf in configs:
        result = nats_config_ok(conf, SERVER_NAME="nats-1")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "sync_interval: always" in conf.read_text()


def test_kubernetes_nats_config_parses_and_syncs_always(tmp_path: Path) -> None:
    config_map = next(d for d in k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config")
    conf = tmp_path / "nats.conf"
    conf.write_text(config_map["data"]["nats.conf"])
    result = nats_config_ok(conf, POD_NAME="nats-0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sync_interval: always" in conf.read_text()


def test_kubernetes_manifests_match_the_api_schema_strictly() -> None:
    docs = k8s_docs()
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("StatefulSet", "nats"), ("StatefulSet", "kb"), ("Deployment", "gateway"),
            ("PodDisruptionBudget", "nats"), ("PodDisruptionBudget", "gateway"), ("Service", "gateway")} <= kinds
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator does reject a wrong field
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                                      "spec": {"portz": []}}, K8S_VERSION, strict=True)


def test_kubernetes_readiness_is_health_and_settings_load() -> None:
    docs = k8s_docs()
    for name, port in (("gateway", 8000), ("kb", 8001)):
        workload = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name)
        probe = workload["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
        assert probe == {"path": "/health", "port": port}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gaia-config")["data"]
    settings = Settings.from_env(config)
    assert settings.stream_replicas == 3 and settings.kb_ownership == "lease" and len(settings.nats_url.split(",")) == 3


def test_compose_file_describes_the_whole_system() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"nats-1", "nats-2", "nats-3", "kb-1", "kb-2", "gateway-1", "gateway-2", "lb"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    env = {k: re.sub(r"\$\{[^}]+\}", "x", str(v)) for k, v in services["gateway-1"]["environment"].items()}
    settings = Settings.from_env(env)
    assert settings.stream_replicas == 3 and len(settings.kb_url.split(",")) == 2 and settings.gateway_workers == 2
    assert settings.nats_user == "gateway" and services["kb-1"]["environment"]["GAIA_NATS_USER"] == "kb"
    assert (DEPLOY / services["gateway-1"]["build"]["dockerfile"].removeprefix("deploy/")).exists()
    nginx = (DEPLOY / "nginx/nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in nginx and "proxy_buffering off" in nginx


def test_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        missing_tool("systemd-analyze is not installed here (apt-get install systemd)")
    venv = Path(sys.executable).parent.parent
    for unit in DEPLOY.glob("systemd/*.service"):
        name = unit.name.replace("@.service", "@8000.service")
        (tmp_path / name).write_text(unit.read_text().replace("/opt/gaia/.venv", str(venv)))
    result = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(tmp_path.iterdir()))],
                            capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_nats_monitoring_listens_on_loopback_only_in_every_shipped_config() -> None:
    """The monitoring port has no authentication and lists users, subscriptions and inbox prefixes:
    every shipped config binds it to 127.0.0.1, and nothing publishes or probes it from outside the pod."""
    config_map = next(d for d in k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config")
    texts = [conf.read_text() for conf in sorted(DEPLOY.glob("nats/*.conf"))] + [config_map["data"]["nats.conf"]]
    for text in texts:
        binds = re.findall(r"^\s*(?:http|http_port|monitor_port|https)\s*[:=]\s*(\S+)", text, re.MULTILINE)
        assert binds == ["127.0.0.1:8222"], binds
    for doc in k8s_docs():
        text = yaml.safe_dump(doc)
        assert "8222" not in text or doc["kind"] in ("ConfigMap", "StatefulSet")
        if doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == "nats":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert all(p["containerPort"] != 8222 for p in container["ports"])
            for probe in ("readinessProbe", "livenessProbe"):
                assert "httpGet" not in container[probe] and "127.0.0.1:8222" in " ".join(container[probe]["exec"]["command"])
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert not [s for s in compose["services"].values() if any("8222" in str(p) for p in s.get("ports", []))]


def test_the_permission_table_in_docs_is_generated_from_the_code() -> None:
    """docs/security.md shows the NATS rights shared/natsauth.py grants, rendered, never hand-typed."""
    from shared.natsauth import PERMISSIONS
    from tools.docs import with_permission_table
    text = (DEPLOY.parent / "docs" / "security.md").read_text()
    assert with_permission_table(text) == text, "run `make docs`"
    assert all(f"`{subject}`" in text for rights in PERMISSIONS.values() for subjects in rights.values()
               for subject in subjects)


def test_kb_runs_on_postgresql_with_two_replicas_wherever_the_manifests_scale() -> None:
    """No kb shares a SQLite file: compose and Kubernetes run two kb on PostgreSQL, systemd reads its DSN."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:") and "pg-data" in compose["volumes"]
    for name in ("kb-1", "kb-2"):
        env = {k: re.sub(r"\$\{[^}]+\}", "x", str(v)) for k, v in services[name]["environment"].items()}
        assert Settings.from_env(env).kb_store == "postgresql://gaia:x@postgres:5432/gaia"
        assert not services[name].get("volumes") and "postgres" in services[name]["depends_on"]
    docs = k8s_docs()
    kb = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kb")
    assert kb["spec"]["replicas"] == 2 and "volumeClaimTemplates" not in kb["spec"]
    env = {e["name"]: e for e in kb["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GAIA_KB_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "gaia-kb-store", "key": "dsn"}
    assert ("StatefulSet", "postgres") in {(d["kind"], d["metadata"]["name"]) for d in docs}
    unit = (DEPLOY / "systemd" / "gaia-kb.service").read_text()
    assert "EnvironmentFile=/etc/gaia/kb-store.env" in unit
    assert "GAIA_KB_DB_PATH" not in (DEPLOY / "systemd" / "gaia.env").read_text()


PUBLIC_PATHS = ("/", "/ws/experience", "/sse/experience", "/chat/unified", "/health", "/openapi.json",
                "/asyncapi.json", "/favicon.ico", "/static/app.js")
OPERATOR_PATHS = ("/metrics", "/debug/event-timings", "/debug/", "/metrics/", "/debug")


def ingress_routes(path: str) -> bool:
    """Whether the shipped Ingress sends `path` to the gateways (Kubernetes' Exact and Prefix matching)."""
    ingress = next(d for d in k8s_docs() if d["kind"] == "Ingress" and d["metadata"]["name"] == "gateway")
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            want, kind = entry["path"], entry["pathType"]
            if kind == "Exact" and path == want:
                return True
            if kind == "Prefix" and (path == want or path.startswith(want.rstrip("/") + "/")):
                return True
    return False


def nginx_routes(path: str) -> bool:
    """Whether the shipped nginx proxies `path` to the gateways: the regex locations are tried first, then
    the longest prefix location (only `location /`, which must answer 404 itself)."""
    conf = (DEPLOY / "nginx/nginx.conf").read_text()
    blocks = re.findall(r"location\s+(~\s+)?(\S+)\s*\{(.*?)\n    \}", conf, re.DOTALL)
    for regex, pattern, body in blocks:
        if regex and re.search(pattern, path):
            return "proxy_pass" in body
    prefix = max((b for b in blocks if not b[0] and path.startswith(b[1])), key=lambda b: len(b[1]))
    return "proxy_pass" in prefix[2]


def test_the_shipped_proxies_pass_the_public_routes_and_never_metrics_or_debug() -> None:
    """/metrics and /debug/ are the operators' (GAIA_ADMIN_TOKEN): nginx and the Ingress do not carry them."""
    for path in PUBLIC_PATHS:
        assert ingress_routes(path), path
        assert nginx_routes(path), path
    for path in OPERATOR_PATHS:
        assert not ingress_routes(path), path
        assert not nginx_routes(path), path
    conf = (DEPLOY / "nginx/nginx.conf").read_text()
    assert re.search(r"location / \{\s*return 404;\s*\}", conf)


def network_allows(source: str | None, target: str, port: int) -> bool:
    """Whether the shipped NetworkPolicies let a pod labelled app=`source` (None: from outside the namespace)
    open `port` on a pod labelled app=`target` (ingress policies; the semantics used by the shipped ones)."""
    policies = [d for d in k8s_docs() if d["kind"] == "NetworkPolicy"]
    selecting = [p for p in policies if all(({"app": target}.get(k) == v)
                                            for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())]
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in selecting)
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            ports = [p["port"] for p in rule.get("ports", [])]
            peer_ok = peers is None or (source is not None and any(
                peer.get("podSelector", {}).get("matchLabels") == {"app": source} for peer in peers))
            if peer_ok and (not ports or port in ports):
                return True
    return False


def test_only_the_gateways_reach_kb_and_only_kb_and_the_gateways_reach_nats() -> None:
    """deploy/k8s/40-network-policy.yaml: a default deny, then each service's callers (kb binds 0.0.0.0 in its pod)."""
    deny = next(d for d in k8s_docs()
                if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    apps = ("gateway", "kb", "nats", "postgres", "elsewhere", None)
    allowed = {(source, target, port) for source in apps for target, port in
               (("kb", 8001), ("nats", 4222), ("nats", 6222), ("postgres", 5432), ("gateway", 8000))
               if network_allows(source, target, port)}
    assert {(s, t, p) for s, t, p in allowed if t != "gateway"} == {
        ("gateway", "kb", 8001), ("kb", "kb", 8001),  # kb forwards a world it does not own to its owner
        ("gateway", "nats", 4222), ("kb", "nats", 4222), ("nats", "nats", 6222), ("kb", "postgres", 5432)}
    assert all((s, "gateway", 8000) in allowed for s in apps)
    assert not network_allows("kb", "kb", 8002) and not network_allows(None, "nats", 8222)
    config = next(d for d in k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gaia-config")
    assert config["data"]["GAIA_KB_HOST"] == "0.0.0.0"  # why the policies matter; documented in the ConfigMap
