"""Kubernetes: render compose/k8s (kustomize), check each object against its schema (the
OpenAPI schemas `kubernetes-validate` ships; ours for KEDA's ScaledObject), then the references
between objects and the settings of every streamfill container."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from deploy_settings import (
    IMAGE,
    ROOT,
    SECRET_KEYS,
    check_setting_names,
    groups_read,
    load_schema,
    worker_config,
)
from kubernetes_validate import utils as k8s_schemas

from schemas import REGISTRY

K8S_DIR = ROOT / "compose" / "k8s"
# The oldest Kubernetes the manifests promise to work on, and the newest the package knows.
K8S_VERSIONS = ("1.29", k8s_schemas.major_minor(k8s_schemas.latest_version()))
KNOWN_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources"}

Obj = dict[str, Any]


# What each probe asks the metrics endpoint (streams/_http.py): started, alive, ready.
PROBE_PATHS = {"startupProbe": "/startedz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}


def yaml_docs(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_python(k8s_dir: Path = K8S_DIR) -> tuple[list[Obj], list[str]]:
    """The kustomization's resources, in order; what it uses beyond `resources` needs kubectl."""
    kustomization = yaml.safe_load((k8s_dir / "kustomization.yaml").read_text())
    extra = sorted(set(kustomization) - KNOWN_KUSTOMIZE_FIELDS)
    problems = (
        [f"kustomization.yaml: {', '.join(extra)}: only `kubectl kustomize` renders this"] if extra else []
    )
    objects = [doc for name in kustomization["resources"] for doc in yaml_docs((k8s_dir / name).read_text())]
    return objects, problems


CLUSTER_AUTOSCALING = "cluster-autoscaling.yaml"


def cluster_variant(objects: list[Obj], k8s_dir: Path = K8S_DIR) -> list[Obj]:
    """The deployment on Redis Cluster: autoscaling.yaml swapped for cluster-autoscaling.yaml,
    and STREAMFILL_PARTITIONS set to the count its triggers' partition keys show."""
    scaled = yaml_docs((k8s_dir / CLUSTER_AUTOSCALING).read_text())
    keys = [t["metadata"]["stream"] for o in scaled for t in o["spec"]["triggers"]]
    count = 1 + max((int(k.split("{", 1)[1].rstrip("}").split(":")[1]) for k in keys if "{" in k), default=0)
    out = []
    for obj in objects:
        if obj["kind"] == "ScaledObject":
            continue
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "streamfill":
            obj = {**obj, "data": {**obj.get("data", {}), "STREAMFILL_PARTITIONS": str(count)}}
        out.append(obj)
    return out + scaled


def render_kubectl(k8s_dir: Path = K8S_DIR) -> list[Obj]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl is not installed (needed for --kubectl)")
    out = subprocess.run([kubectl, "kustomize", str(k8s_dir)], capture_output=True, text=True, check=True)
    return yaml_docs(out.stdout)


def _key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def compare_renderings(python: list[Obj], kubectl: list[Obj]) -> list[str]:
    """kubectl must render exactly what the Python loader reads (it only reorders)."""
    ours, theirs = {_key(o): o for o in python}, {_key(o): o for o in kubectl}
    differ = [key for key in sorted(ours | theirs) if ours.get(key) != theirs.get(key)]
    return [f"{kind}/{name}: `kubectl kustomize` renders it differently" for kind, name in differ]


def schema_problems(obj: Obj) -> list[str]:
    where = "/".join(_key(obj))
    if obj.get("apiVersion") == "keda.sh/v1alpha1":
        validator = jsonschema.Draft202012Validator(load_schema("keda-scaledobject.schema.json"))
        return [f"{where}: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
    problems = []
    for version in K8S_VERSIONS:
        try:
            k8s_schemas.validate(obj, version, strict=True)
        except k8s_schemas.ValidationError as exc:
            problems.append(f"{where} (k8s {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
        except (k8s_schemas.SchemaNotFoundError, k8s_schemas.InvalidSchemaError) as exc:
            problems.append(f"{where}: no schema for it ({exc.message})")
    return problems


def pod_spec(obj: Obj) -> Obj | None:
    return (
        obj.get("spec", {}).get("template", {}).get("spec")
        if obj["kind"] in {"Deployment", "StatefulSet"}
        else None
    )


def container_env(container: Obj, configmaps: dict[str, Obj], where: str) -> tuple[dict[str, str], list[str]]:
    """The environment a container starts with; values from fieldRefs become the pod's name."""
    env: dict[str, str] = {}
    problems = []
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            if name not in configmaps:
                problems.append(f"{where}: envFrom ConfigMap {name} is not in the manifests")
            env.update(configmaps.get(name, {}).get("data", {}))
        elif source.get("secretRef", {}).get("name") == "streamfill-secrets":
            env.update(SECRET_KEYS)
        else:
            problems.append(f"{where}: envFrom {source}: only ConfigMaps here and streamfill-secrets")
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", f"{where.split('/')[-1]}-0")
    return env, problems


def check_workload(obj: Obj, by_kind: dict[str, dict[str, Obj]]) -> tuple[list[str], dict[str, str]]:
    """One Deployment/StatefulSet: its streamfill container, its env, its ports and Service."""
    where = "/".join(_key(obj))
    spec = pod_spec(obj) or {}
    problems: list[str] = []
    reads: dict[str, str] = {}
    for container in spec.get("containers", []):
        if container.get("image", "").split(":")[0].split("/")[-1] != IMAGE:
            continue
        env, found = container_env(container, by_kind.get("ConfigMap", {}), where)
        # The ConfigMap's names are checked once, on their own; here the container's own.
        own = sorted(item["name"] for item in container.get("env", []))
        problems += found + check_setting_names(where, own)
        config, found = worker_config(where, container.get("args", []), env)
        problems += found
        reads = groups_read(config)
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if "METRICS_PORT" in env and ports.get("metrics") != int(env["METRICS_PORT"]):
            problems.append(
                f"{where}: port `metrics` {ports.get('metrics')} != METRICS_PORT {env['METRICS_PORT']}"
            )
        for probe, endpoint in PROBE_PATHS.items():
            get = container.get(probe, {}).get("httpGet", {})
            port = get.get("port")
            if isinstance(port, str) and port not in ports:
                problems.append(f"{where}: {probe} uses port {port}, which the container does not name")
            path = str(get.get("path", endpoint)).split("?", 1)[0]
            if path != endpoint:
                problems.append(f"{where}: {probe} asks {path}; it must ask {endpoint}")
    service = obj["spec"].get("serviceName")
    if service and by_kind.get("Service", {}).get(service, {}).get("spec", {}).get("clusterIP") != "None":
        problems.append(f"{where}: serviceName {service} is not a headless Service in the manifests")
    return problems, reads


def check_services(by_kind: dict[str, dict[str, Obj]]) -> list[str]:
    problems = []
    pods = [
        pod_spec(o) and o for kind in ("Deployment", "StatefulSet") for o in by_kind.get(kind, {}).values()
    ]
    for name, service in by_kind.get("Service", {}).items():
        selector = service["spec"].get("selector", {})
        matched = [
            o for o in pods if o and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        if not matched:
            problems.append(f"Service/{name}: its selector matches no pod template")
        names = {
            p.get("name")
            for o in matched
            for c in (pod_spec(o) or {})["containers"]
            for p in c.get("ports", [])
        }
        targets = [p["targetPort"] for p in service["spec"].get("ports", []) if "targetPort" in p]
        problems += [
            f"Service/{name}: targetPort {t} is no container port name"
            for t in targets
            if isinstance(t, str) and t not in names
        ]
    return problems


def check_scaled_object(
    obj: Obj, by_kind: dict[str, dict[str, Obj]], reads: dict[str, dict[str, str]]
) -> list[str]:
    where = "/".join(_key(obj))
    ref = obj["spec"]["scaleTargetRef"]
    target = by_kind.get(ref.get("kind", "Deployment"), {}).get(ref["name"])
    if target is None:
        return [
            f"{where}: scaleTargetRef {ref.get('kind', 'Deployment')}/{ref['name']} is not in the manifests"
        ]
    problems = []
    container = (pod_spec(target) or {}).get("containers", [{}])[0]
    env, _ = container_env(container, by_kind.get("ConfigMap", {}), where)
    target_reads = reads.get(ref["name"], {})
    watched = set()
    for trigger in obj["spec"]["triggers"]:
        meta = trigger["metadata"]
        for key, value in meta.items():
            if key.endswith("FromEnv") and value not in env:
                problems.append(f"{where}: {key} {value} is not in {ref['name']}'s environment")
        stream = meta.get("stream")
        watched.add(stream)
        if stream is not None and _registered(stream) not in REGISTRY:
            problems.append(f"{where}: stream {stream} is not a registered stream")
        elif stream is not None and target_reads.get(stream) != meta.get("consumerGroup"):
            problems.append(f"{where}: {ref['name']} reads {stream} with group {target_reads.get(stream)}, "
                            f"the trigger watches group {meta.get('consumerGroup')}")  # fmt: skip
    return problems + _partition_coverage(obj, where, target_reads, watched)


def _registered(stream: str) -> str:
    """The registry name of a stream key: `[<prefix>:]<name>` or a partition `[<prefix>:]{<name>:<i>...}`."""
    last = stream.rsplit(":", 1)[-1] if "{" not in stream else stream[stream.index("{") + 1 :]
    return last.split(":", 1)[0] if "{" in stream else last


def _partition_coverage(obj: Obj, where: str, reads: dict[str, str], watched: set[str]) -> list[str]:
    """A stream watched in one partition must be watched in all, and several triggers must be
    added up by a `scalingModifiers.formula` naming each (KEDA takes the largest otherwise)."""
    problems = []
    for name in sorted({_registered(k) for k in reads if "{" in k}):
        keys = {k for k in reads if "{" in k and _registered(k) == name}
        if keys & watched and keys - watched:
            problems.append(
                f"{where}: {name} is partitioned; triggers miss {', '.join(sorted(keys - watched))}"
            )
    triggers = obj["spec"]["triggers"]
    if len(triggers) > 1 and any("{" in (t["metadata"].get("stream") or "") for t in triggers):
        formula = obj["spec"].get("advanced", {}).get("scalingModifiers", {}).get("formula", "")
        missing = [t.get("name", "?") for t in triggers if not t.get("name") or t["name"] not in formula]
        if missing:
            problems.append(f"{where}: the scalingModifiers formula does not add up {', '.join(missing)}")
    return problems


def check_k8s(objects: list[Obj]) -> list[str]:
    problems = [p for obj in objects for p in schema_problems(obj)]
    by_kind: dict[str, dict[str, Obj]] = {}
    for obj in objects:
        kind, name = _key(obj)
        if name in by_kind.setdefault(kind, {}):
            problems.append(f"{kind}/{name}: defined twice")
        by_kind[kind][name] = obj
    for name, configmap in by_kind.get("ConfigMap", {}).items():
        problems += check_setting_names(f"ConfigMap/{name}", sorted(configmap.get("data", {})))
    reads: dict[str, dict[str, str]] = {}
    for kind in ("Deployment", "StatefulSet"):
        for name, obj in by_kind.get(kind, {}).items():
            found, reads[name] = check_workload(obj, by_kind)
            problems += found
    problems += check_services(by_kind)
    for obj in by_kind.get("ScaledObject", {}).values():
        problems += check_scaled_object(obj, by_kind, reads)
    return problems
