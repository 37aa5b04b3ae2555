"""deploy/ stays in step with the code: an image, a Deployment and a compose entry per service, probes at routes
the apps really serve, env vars their settings classes really read, and network policies that allow exactly the
calls the services are configured to make (../shared/DESIGN.md)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from microshop_kit.settings import ServiceSettings
from microshop_kit.testing import POSTGRES_SERVER, require_server
from microshop_launcher.platform import DATABASE_SERVICES, SERVICES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
INIT_SCRIPT = DEPLOY / "postgres" / "init-databases.sh"
#: Env vars an image sets for its own scripts (the healthcheck), not read by a settings class.
IMAGE_ONLY_ENV = {
    "MICROSHOP_SERVICE",
    "MICROSHOP_HEALTHCHECK_URL",
    "PATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
}
MEMBER_PYPROJECT = re.compile(r"COPY (kit|contracts|launcher|services/[a-z]+)/pyproject\.toml \1/")
#: Who may call whom (DESIGN.md), plus the JWKS every service that verifies tokens fetches from users.
CALLERS = {
    "gateway": None,  # anyone: the only service that takes outside traffic
    "storefront": {"gateway"},
    "users": {"gateway", "orders", "notifications", "products", "payments"},
    "products": {"gateway", "orders"},
    "orders": {"gateway"},
    "payments": {"gateway", "orders"},
    "notifications": {"gateway"},
}


#: The gateway takes anyone; of the services, the storefront calls it (its pages use the public API).
GATEWAY_CLIENTS_IN_THE_NAMESPACE = {"storefront"}


# ------------------------------------------------------------------------------------------------ helpers


@cache
def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"microshop_{service}.settings")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, ServiceSettings) and value is not ServiceSettings
    ]
    assert len(classes) == 1, f"microshop_{service}.settings should define one settings class, found {classes}"
    return classes[0]


def env_prefix(service: str) -> str:
    return str(settings_class(service).model_config.get("env_prefix", ""))


def unread_env(service: str, names: list[str]) -> list[str]:
    """The env var names among ``names`` that the service's settings class does not read."""
    prefix, fields = env_prefix(service), settings_class(service).model_fields
    return [
        name
        for name in names
        if name not in IMAGE_ONLY_ENV and not (name.startswith(prefix) and name[len(prefix) :].lower() in fields)
    ]


def default_port(service: str) -> int:
    port: int = settings_class(service).model_fields["port"].default
    return port


@cache
def serves(service: str, path: str) -> bool:
    """Whether the service's app has a route at ``path``: asked in process, without starting it (no lifespan:
    nothing is opened), so a missing route is a 404 and anything else means the route exists."""
    module = importlib.import_module(f"microshop_{service}.app")
    app = module.create_app(settings_class(service)())

    async def ask() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            return (await client.get(path)).status_code

    return asyncio.run(ask()) != 404


@cache
def manifests() -> tuple[dict[str, Any], ...]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return tuple(documents)


def manifest(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/kubernetes, found {len(found)}"
    return found[0]


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def dockerfile(service: str) -> str:
    return (DEPLOY / "docker" / service / "Dockerfile").read_text()


def as_template(service: str) -> str:
    """A service's Dockerfile with its name, env prefix and port replaced by placeholders (the lines copying
    every workspace member's pyproject.toml, the same in all, left out)."""
    lines = [line for line in dockerfile(service).splitlines() if not MEMBER_PYPROJECT.fullmatch(line)]
    text = "\n".join(lines).replace(env_prefix(service), "<PREFIX>")
    return re.sub(rf"\b{default_port(service)}\b", "<PORT>", text).replace(service, "<SERVICE>")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def container_env_names(service: str, spec: dict[str, Any]) -> list[str]:
    names = [entry["name"] for entry in spec.get("env", [])]
    for source in spec.get("envFrom", []):
        names += list(manifest("ConfigMap", source["configMapRef"]["name"])["data"])
    return names


# ------------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_an_image_built_from_the_shared_template(service: str) -> None:
    assert as_template(service) == as_template("users"), (
        f"deploy/docker/{service}/Dockerfile drifted from the others: change every service's Dockerfile together"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_runs_the_service_unprivileged_on_its_settings_port(service: str) -> None:
    text = dockerfile(service)
    runtime = text[text.rindex("\nFROM ") :]
    assert "slim" in runtime.splitlines()[1], "the final stage starts from a slim Python image"
    assert f'ENTRYPOINT ["python", "-m", "microshop_{service}"]' in runtime
    assert 'CMD ["serve"]' in runtime
    assert re.search(r"^USER 10001:10001$", runtime, re.M), "the service runs as a numeric non-root user"
    assert re.search(r"^HEALTHCHECK .*healthcheck\.py", runtime, re.M)
    assert f"EXPOSE {default_port(service)}\n" in runtime
    assert "uv" not in re.findall(r"COPY --from=(\S+)", runtime), "no build tool in the final image"
    members = {"kit", "contracts", "launcher", *(f"services/{name}" for name in SERVICES)}
    assert {m.group(1) for line in text.splitlines() if (m := MEMBER_PYPROJECT.fullmatch(line))} == members
    for label in ("title", "version", "revision", "source", "created"):
        assert f"org.opencontainers.image.{label}=" in runtime


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_sets_only_settings_the_service_reads(service: str) -> None:
    names = re.findall(r"^\s+([A-Z][A-Z0-9_]*)=", dockerfile(service).split("AS runtime", 1)[1], re.M)
    assert f"{env_prefix(service)}PORT" in names and f"{env_prefix(service)}WORKERS" in names
    assert unread_env(service, names) == []


def test_the_healthcheck_asks_the_readiness_of_the_port_from_settings() -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    env = {"MICROSHOP_SERVICE": "orders", "ORDERS_PORT": "9103"}
    assert healthcheck.health_url(env) == "http://127.0.0.1:9103/readyz"
    assert serves("orders", "/readyz") and not serves("orders", "/no-such-probe")


# ------------------------------------------------------------------------------------------------ compose


@pytest.mark.parametrize("service", SERVICES)
def test_compose_runs_every_service_from_its_image_with_settings_it_reads(service: str) -> None:
    entry = compose()["services"][service]
    assert entry["build"]["dockerfile"] == f"deploy/docker/{service}/Dockerfile"
    assert entry["image"].startswith(f"microshop-{service}:")
    assert entry["read_only"] is True and entry["cap_drop"] == ["ALL"]
    assert unread_env(service, list(entry.get("environment", {}))) == []


@pytest.mark.parametrize("service", DATABASE_SERVICES)
def test_compose_migrates_each_database_in_a_job_before_its_service_starts(service: str) -> None:
    services = compose()["services"]
    job = services[f"{service}-migrate"]
    assert job["command"] == ["migrate"] and job["image"] == services[service]["image"]
    assert services[service]["depends_on"][f"{service}-migrate"] == {"condition": "service_completed_successfully"}
    url = services[service]["environment"][f"{env_prefix(service)}DATABASE_URL"]
    assert url.endswith(f"@postgres:5432/{service}"), "each service has a database of its own"
    assert unread_env(service, list(job["environment"])) == []


def test_compose_starts_by_health_and_publishes_only_the_gateway() -> None:
    services = compose()["services"]
    for name, entry in services.items():
        for dependency, rule in (entry.get("depends_on") or {}).items():
            assert rule["condition"] in ("service_healthy", "service_completed_successfully"), (name, dependency)
            target = services[dependency]
            assert "healthcheck" in target or "build" in target or rule["condition"] != "service_healthy"
        if name != "gateway":
            assert "ports" not in entry, f"{name} publishes a port: only the gateway takes outside traffic"
    assert services["gateway"]["ports"] == ["8000:8000"]
    assert set(services["gateway"]["depends_on"]) >= set(SERVICES) - {"gateway"}


def test_the_init_script_creates_every_database_compose_and_kubernetes_use() -> None:
    default = re.search(r"MICROSHOP_DATABASES:-([a-z ]+)\}", INIT_SCRIPT.read_text())
    assert default is not None and default.group(1).split() == list(DATABASE_SERVICES)
    mount = "./postgres/init-databases.sh:/docker-entrypoint-initdb.d/10-microshop.sh:ro"
    assert mount in compose()["services"]["postgres"]["volumes"]
    assert manifest("ConfigMap", "postgres-init")["data"]["10-microshop.sh"] == INIT_SCRIPT.read_text()


# --------------------------------------------------------------------------------------------- kubernetes


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    present = sorted(path.name for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")
    assert sorted(listed) == present
    images = {image["name"] for image in yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["images"]}
    assert images == {f"microshop-{service}" for service in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_deploys_hardened_with_probes_at_routes_it_serves(service: str) -> None:
    deployment = manifest("Deployment", service)
    spec = container(deployment)
    assert spec["image"].split(":")[0] == f"microshop-{service}"
    assert spec["ports"] == [{"name": "http", "containerPort": default_port(service), "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = spec[probe]["httpGet"]
        assert get["port"] == "http" and serves(service, get["path"]), f"{probe} asks {get['path']}: no such route"
    assert spec["startupProbe"]["httpGet"]["path"] == "/readyz"
    security = spec["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert {"mountPath": "/tmp", "name": "tmp"} in spec["volumeMounts"]  # noqa: S108 - the one writable path
    assert set(spec["resources"]) == {"requests", "limits"}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("service", SERVICES)
def test_each_deployment_sets_only_settings_the_service_reads_and_no_secret_value(service: str) -> None:
    spec = container(manifest("Deployment", service))
    assert unread_env(service, container_env_names(service, spec)) == []
    for entry in spec.get("env", []):
        assert "value" not in entry, f"{entry['name']}: secrets come from a Secret reference, not the manifest"
    assert not [doc for doc in manifests() if doc["kind"] == "Secret"], "no Secret (and no secret value) in the repo"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_service_autoscaler_and_disruption_budget_on_its_pods(service: str) -> None:
    pods = manifest("Deployment", service)["spec"]["template"]["metadata"]["labels"]
    assert manifest("Service", service)["spec"]["ports"][0]["port"] == default_port(service)
    assert manifest("Service", service)["spec"]["selector"].items() <= pods.items()
    assert manifest("PodDisruptionBudget", service)["spec"]["selector"]["matchLabels"].items() <= pods.items()
    hpa = manifest("HorizontalPodAutoscaler", service)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
    assert hpa["minReplicas"] >= 2


@pytest.mark.parametrize("service", DATABASE_SERVICES)
def test_each_database_is_migrated_by_a_job(service: str) -> None:
    job = manifest("Job", f"{service}-migrate")
    spec = job["spec"]["template"]["spec"]["containers"][0]
    assert spec["image"] == container(manifest("Deployment", service))["image"]
    assert spec["args"] == ["migrate"]
    assert unread_env(service, [entry["name"] for entry in spec["env"]]) == []
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"


def _allowed_callers(service: str) -> set[str] | None:
    rules = manifest("NetworkPolicy", service)["spec"]["ingress"]
    if any("from" not in rule for rule in rules):
        return None
    return {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for rule in rules for peer in rule["from"]}


def _allowed_targets(service: str) -> dict[str, set[int]]:
    targets: dict[str, set[int]] = {}
    for rule in manifest("NetworkPolicy", service)["spec"]["egress"]:
        for peer in rule.get("to", []):
            name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            if name:
                targets.setdefault(name, set()).update(port["port"] for port in rule["ports"])
    return targets


@pytest.mark.parametrize("service", SERVICES)
def test_network_policy_admits_exactly_the_callers_the_design_names(service: str) -> None:
    assert _allowed_callers(service) == CALLERS[service]
    callers_of = {name: CALLERS[name] for name in SERVICES}
    expected_out = {
        name
        for name, callers in callers_of.items()
        if (service in callers if callers is not None else service in GATEWAY_CLIENTS_IN_THE_NAMESPACE)
    }
    if service == "users":
        expected_out.discard("users")  # its own JWKS on loopback
    assert set(_allowed_targets(service)) - {"postgres", "nats", "redis"} == expected_out
    if service in DATABASE_SERVICES:
        assert _allowed_targets(service)["postgres"] == {5432} and _allowed_targets(service)["nats"] == {4222}


@pytest.mark.parametrize("service", SERVICES)
def test_every_upstream_a_service_is_configured_to_call_is_open_both_ways(service: str) -> None:
    spec = container(manifest("Deployment", service))
    config = {}
    for source in spec.get("envFrom", []):
        config.update(manifest("ConfigMap", source["configMapRef"]["name"])["data"])
    for name, value in config.items():
        match = re.fullmatch(r"https?://([a-z-]+):(\d+)(/.*)?", value)
        if not name.endswith("_URL") or match is None or match.group(1) == "127.0.0.1":
            continue
        target, port = match.group(1), int(match.group(2))
        if target == "nats":
            assert _allowed_targets(service)["nats"] == {4222}
            continue
        assert port == default_port(target), f"{name}={value}: {target} listens on {default_port(target)}"
        assert port in _allowed_targets(service).get(target, set()), f"{service} may not reach {target} ({name})"
        callers = _allowed_callers(target)
        assert callers is None or service in callers, f"{target} does not admit {service} ({name})"


def test_only_the_gateway_is_reachable_from_outside_the_namespace() -> None:
    ingress = manifest("Ingress", "gateway")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress == {"name": "gateway", "port": {"name": "http"}}
    open_to_all = [
        doc["metadata"]["name"]
        for doc in manifests()
        if doc["kind"] == "NetworkPolicy" and any("from" not in rule for rule in doc["spec"].get("ingress", []))
    ]
    assert open_to_all == ["gateway"]
    assert manifest("NetworkPolicy", "default-deny")["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }


def test_nats_runs_as_a_three_node_jetstream_cluster_on_volumes() -> None:
    nats = manifest("StatefulSet", "nats")["spec"]
    assert nats["replicas"] == 3 and nats["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    conf = manifest("ConfigMap", "nats-config")["data"]["nats.conf"]
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", conf)
    assert routes == ["nats-0", "nats-1", "nats-2"] and "sync_interval: always" in conf


# ------------------------------------------------------------------------------------ the init script, run


@pytest.mark.infra
def test_the_init_script_gives_each_service_a_database_only_it_can_use() -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    server = httpx.URL(POSTGRES_SERVER.replace("postgresql://", "http://"))
    host, port = server.host, str(server.port or 5432)
    require_server(host, int(port), "PostgreSQL")
    tag = f"t{uuid.uuid4().hex[:8]}"
    names = [f"{tag}_orders", f"{tag}_payments"]

    def query(user: str, database: str, sql: str) -> subprocess.CompletedProcess[str]:
        command = [psql, "-h", host, "-p", port, "-U", user, "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    env = {**os.environ, "PGHOST": host, "PGPORT": port, "POSTGRES_USER": "postgres"}
    env.update(MICROSHOP_DATABASES=" ".join(names), MICROSHOP_DB_PASSWORD="trial-password")
    try:
        for _ in range(2):  # idempotent: a second run changes nothing
            subprocess.run(["bash", str(INIT_SCRIPT)], env=env, check=True, capture_output=True, timeout=60)
        owners = query("postgres", "postgres", f"SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
                       f"WHERE datname LIKE '{tag}%' ORDER BY 1")  # fmt: skip
        assert owners.stdout.split() == [f"{name}|{name}" for name in names], owners.stderr
        own = query(names[0], names[0], "CREATE TABLE t (x int)")
        assert own.returncode == 0, own.stderr
        other = query(names[0], names[1], "SELECT 1")
        assert other.returncode != 0 and "permission denied" in other.stderr, other
    finally:
        for name in names:
            query("postgres", "postgres", f'DROP DATABASE IF EXISTS "{name}"')
            query("postgres", "postgres", f'DROP ROLE IF EXISTS "{name}"')
