"""The kustomize base and overlays, rendered with `kubectl kustomize` and checked: valid
Kubernetes objects, every Deployment safe to run and to stop, every reference resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from convohub.cli import deploy
from convohub.contracts.topics import TOPICS
from convohub.runtime.config import load_config

from .conftest import REPO, TARGETS, named, of_kind, workspace_services

KUBERNETES_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests are checked against."""

CUSTOM_KINDS = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
"""Custom resources of operators (no schema in kubernetes-validate); checked below."""


@pytest.mark.parametrize("target", TARGETS)
def test_every_manifest_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    problems = []
    for doc in rendered[target]:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(map(str, error.path))
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} {path}: {error.message}")
    assert not problems, "\n".join(problems)


def test_validation_catches_a_broken_deployment(rendered: dict) -> None:
    broken = yaml.safe_load(
        yaml.safe_dump(named(rendered["overlays/prod"], "Deployment")["convohub-router"])
    )
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSeconds"] = "10s"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_only_known_custom_resources(rendered: dict, target: str) -> None:
    builtin_groups = ("v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2")
    for doc in rendered[target]:
        key = (doc["apiVersion"], doc["kind"])
        assert (
            key in CUSTOM_KINDS
            or doc["apiVersion"] in builtin_groups
            or doc["apiVersion"].startswith("networking.k8s.io/")
        ), key


def convohub_deployments(documents: list[dict]) -> dict[str, dict]:
    return {
        name: doc
        for name, doc in named(documents, "Deployment").items()
        if name.startswith("convohub-")
    }


@pytest.mark.parametrize("target", TARGETS)
def test_each_workspace_service_has_deployment_service_hpa_and_pdb(
    rendered: dict, target: str
) -> None:
    documents = rendered[target]
    expected = {deploy.deployment_name(name) for name in workspace_services()}
    assert set(convohub_deployments(documents)) == expected
    assert expected <= set(named(documents, "Service"))
    assert set(named(documents, "HorizontalPodAutoscaler")) == expected
    assert set(named(documents, "PodDisruptionBudget")) == expected
    for name, deployment in convohub_deployments(documents).items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        service = named(documents, "Service")[name]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        pdb = named(documents, "PodDisruptionBudget")[name]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        hpa = named(documents, "HorizontalPodAutoscaler")[name]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_has_probes_resources_and_runs_as_non_root(rendered: dict, target: str) -> None:
    workloads = of_kind(rendered[target], "Deployment") + of_kind(rendered[target], "Job")
    assert workloads
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        pod_security = pod.get("securityContext", {})
        for container in pod["containers"]:
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, name
            assert security.get("runAsUser", 1) != 0, name
            assert container.get("securityContext", {}).get("allowPrivilegeEscalation") is False
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert {"cpu", "memory"} <= set(resources["limits"]), name
            if workload["kind"] == "Deployment":
                assert "livenessProbe" in container, name
                assert "readinessProbe" in container, name


@pytest.mark.parametrize("target", TARGETS)
def test_services_probe_health_endpoints_and_stop_gracefully(rendered: dict, target: str) -> None:
    for name, deployment in convohub_deployments(rendered[target]).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"http": deploy.HTTP_PORT}
        # preStop pause, then SIGTERM: uvicorn drains (5 s), consumers finish the batch
        # and commit, the outbox drains; the grace period must leave room for all of it.
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] >= pause + 30, name
        assert container["command"] == ["convohub", "serve", name.removeprefix("convohub-")]


@pytest.mark.parametrize("target", TARGETS)
def test_config_and_secret_references_resolve(rendered: dict, target: str) -> None:
    documents = rendered[target]
    config_maps = named(documents, "ConfigMap")
    secrets = named(documents, "Secret")
    for workload in of_kind(documents, "Deployment") + of_kind(documents, "Job"):
        pod = workload["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    config = config_maps[ref["configMapKeyRef"]["name"]]
                    assert ref["configMapKeyRef"]["key"] in config["data"]
                if "secretKeyRef" in ref and target == "overlays/dev":
                    # dev generates its Secret; base and prod expect it made out of band
                    secret = secrets[ref["secretKeyRef"]["name"]]
                    assert ref["secretKeyRef"]["key"] in secret["data"]


def test_base_config_is_a_valid_convohub_yaml(rendered: dict, tmp_path: Path) -> None:
    config_map = next(
        doc
        for doc in of_kind(rendered["base"], "ConfigMap")
        if doc["metadata"]["name"].startswith("convohub-config")
    )
    settings = next(
        doc
        for doc in of_kind(rendered["base"], "ConfigMap")
        if doc["metadata"]["name"].startswith("convohub-env")
    )["data"]
    assert settings["CONVOHUB_CONFIG"] == "/etc/convohub/convohub.yaml"
    assert settings["CONVOHUB_MODE"] == "distributed"
    assert settings["CONVOHUB_HTTP_HOST"] == "0.0.0.0"
    text = config_map["data"]["convohub.yaml"]
    file = tmp_path / "convohub.yaml"
    file.write_text(text)
    config = load_config(file, {})  # no variables set: the dev fallbacks apply
    assert config.tenants


@pytest.mark.parametrize(("target", "replicas"), [("overlays/dev", 1), ("overlays/prod", 3)])
def test_kafka_topics_are_the_registry(rendered: dict, target: str, replicas: int) -> None:
    topics = named(rendered[target], "KafkaTopic")
    assert set(topics) == {topic.name for topic in TOPICS}
    for topic in TOPICS:
        spec = topics[topic.name]["spec"]
        assert spec["topicName"] == topic.name
        assert spec["partitions"] == topic.partitions
        assert spec["replicas"] == replicas
        assert int(spec["config"]["min.insync.replicas"]) <= replicas
        for key, value in topic.kafka_config().items():
            assert spec["config"][key] == value


@pytest.mark.parametrize("target", TARGETS)
def test_scaled_objects_target_deployments_and_take_over_their_hpa(
    rendered: dict, target: str
) -> None:
    documents = rendered[target]
    deployments = convohub_deployments(documents)
    hpas = named(documents, "HorizontalPodAutoscaler")
    topics = {topic.name for topic in TOPICS}
    for scaled in of_kind(documents, "ScaledObject"):
        spec = scaled["spec"]
        target_name = spec["scaleTargetRef"]["name"]
        assert target_name in deployments
        assert spec["advanced"]["horizontalPodAutoscalerConfig"]["name"] in hpas
        assert scaled["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"]
        service = target_name.removeprefix("convohub-")
        lag = [t for t in spec["triggers"] if t["type"] == "kafka"]
        assert lag
        for trigger in lag:
            meta = trigger["metadata"]
            assert meta["consumerGroup"].startswith(f"{service}.")
            assert meta["topic"] in topics
            assert int(meta["lagThreshold"]) > 0
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]


@pytest.mark.parametrize("target", TARGETS)
def test_every_ingress_rule_points_to_an_existing_service_port(rendered: dict, target: str) -> None:
    documents = rendered[target]
    services = named(documents, "Service")
    (ingress,) = of_kind(documents, "Ingress")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert len(paths) == len(deploy.ROUTES)
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] in services, backend
        port_names = {port["name"] for port in services[backend["name"]]["spec"]["ports"]}
        assert backend["port"]["name"] in port_names
    # ingress-nginx tries regex paths longest first; the list is in that order already
    lengths = [len(path["path"]) for path in paths]
    assert lengths == sorted(lengths, reverse=True)


def test_prod_runs_postgresql_on_cloudnativepg(rendered: dict) -> None:
    documents = rendered["overlays/prod"]
    (cluster,) = of_kind(documents, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] >= 3
    settings = next(
        doc
        for doc in of_kind(documents, "ConfigMap")
        if doc["metadata"]["name"].startswith("convohub-env")
    )["data"]
    # the services talk to the cluster's read-write Service, with the owner's Secret
    assert settings["DATABASE_HOST"] == f"{cluster['metadata']['name']}-rw"
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert initdb["database"] == settings["DATABASE_NAME"]
    router = convohub_deployments(documents)["convohub-router"]
    env = router["spec"]["template"]["spec"]["containers"][0]["env"]
    secret_names = {
        v["valueFrom"]["secretKeyRef"]["name"]
        for v in env
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert secret_names == {initdb["secret"]["name"]}
    assert settings["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http")
    assert not of_kind(documents, "Secret"), "prod Secrets are made out of band"


def test_prod_alerts_are_the_compose_alerts(rendered: dict) -> None:
    (rule,) = of_kind(rendered["overlays/prod"], "PrometheusRule")
    alerts = yaml.safe_load((REPO / "deploy/observability/prometheus/alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
