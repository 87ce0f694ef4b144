"""Offline validation of compose/ and compose/k8s/ (compose/validate.py): the files are valid, and
each check catches the mistake it exists for. `make validate-deploy` (CI) also renders with
`kubectl kustomize` and compares; this suite needs only Python."""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

COMPOSE = Path(__file__).resolve().parents[1] / "compose"
# compose/validate.py's modules are scripts beside it, not a package.
sys.path.insert(0, str(COMPOSE))
deploy_compose = importlib.import_module("deploy_compose")
deploy_k8s = importlib.import_module("deploy_k8s")
InterpolationError = deploy_compose.InterpolationError
check_compose, interpolate = deploy_compose.check_compose, deploy_compose.interpolate
check_k8s, render_python = deploy_k8s.check_k8s, deploy_k8s.render_python

Objs = list[dict[str, Any]]


def test_the_deployment_files_are_valid() -> None:
    objects, problems = render_python()
    assert {o["kind"] for o in objects} >= {
        "ConfigMap",
        "Deployment",
        "StatefulSet",
        "Service",
        "ScaledObject",
    }
    assert problems + check_k8s(objects) + check_compose() == []


def test_the_cluster_variant_is_valid_and_its_checks_catch_their_mistakes() -> None:
    """cluster-autoscaling.yaml (partitioned streams on Redis Cluster): one named trigger per
    partition, added up by a formula; a trigger missing, or left out of the formula, is caught."""
    objects, _ = render_python()
    variant = deploy_k8s.cluster_variant(objects)
    assert _one(variant, "ConfigMap", "streamfill")["data"]["STREAMFILL_PARTITIONS"] == "6"
    indexer = _one(variant, "ScaledObject", "indexer")
    assert len(indexer["spec"]["triggers"]) == 6 + 6 + 1
    assert check_k8s(variant) == []
    dropped = copy.deepcopy(variant)
    _one(dropped, "ScaledObject", "backfiller")["spec"]["triggers"].pop(3)
    problems = check_k8s(dropped)
    assert any("repo_backfill is partitioned; triggers miss {repo_backfill:3" in p for p in problems), (
        problems
    )
    summed = copy.deepcopy(variant)
    modifiers = _one(summed, "ScaledObject", "indexer")["spec"]["advanced"]["scalingModifiers"]
    modifiers["formula"] = modifiers["formula"].replace(" + firehose_live_5", "")
    problems = check_k8s(summed)
    assert any("formula does not add up firehose_live_5" in p for p in problems), problems
    generate = importlib.import_module("gen_cluster_autoscaling")
    assert generate.render(6) == (COMPOSE / "k8s" / "cluster-autoscaling.yaml").read_text()
    assert "{repo_backfill:47" in generate.render(48) and "p:{firehose_live:0" in generate.render(2, "p")
    one = copy.deepcopy(variant)
    _one(one, "ConfigMap", "streamfill")["data"]["STREAMFILL_PARTITIONS"] = "1"
    problems = check_k8s(one)  # the workers would read repo_backfill, not its partitions
    assert any("reads {repo_backfill:0" in p or "reads None" in p for p in problems), problems


def _one(objects: Objs, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _container(objects: Objs, name: str) -> dict[str, Any]:
    workload = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == name)
    container: dict[str, Any] = workload["spec"]["template"]["spec"]["containers"][0]
    return container


def _trigger(objects: Objs, name: str) -> dict[str, Any]:
    trigger: dict[str, Any] = _one(objects, "ScaledObject", name)["spec"]["triggers"][0]["metadata"]
    return trigger


K8S_MISTAKES: dict[str, tuple[Callable[[Objs], object], str]] = {
    "unknown field in a container": (
        lambda o: _container(o, "indexer").update(imagePullPolicyy="Always"),
        "'imagePullPolicyy' was unexpected",
    ),
    "wrong type for a k8s field": (
        lambda o: _one(o, "StatefulSet", "backfiller")["spec"].update(replicas="2"),
        "spec.replicas: '2' is not of type 'integer'",
    ),
    "misspelt ScaledObject field": (
        lambda o: _one(o, "ScaledObject", "indexer")["spec"].update(pollingIntervall=5),
        "'pollingIntervall' was unexpected",
    ),
    "lagCount without activationLagCount": (
        lambda o: _trigger(o, "backfiller").pop("activationLagCount"),
        "'activationLagCount' is a dependency of 'lagCount'",
    ),
    "trigger metadata must be strings": (
        lambda o: _trigger(o, "backfiller").update(lagCount=2000),
        "2000 is not of type 'string'",
    ),
    "trigger on a stream nobody writes": (
        lambda o: _trigger(o, "backfiller").update(stream="repo_backfil"),
        "stream repo_backfil is not a registered stream",
    ),
    "trigger on the wrong group": (
        lambda o: _trigger(o, "backfiller").update(consumerGroup="firehose_group"),
        "reads repo_backfill with group repo_backfill_group, the trigger watches group firehose_group",
    ),
    "trigger reads an address the target lacks": (
        lambda o: _trigger(o, "indexer").update(addressFromEnv="REDIS_HOSTPORT"),
        "addressFromEnv REDIS_HOSTPORT is not in indexer's environment",
    ),
    "scaling a workload that does not exist": (
        lambda o: _one(o, "ScaledObject", "indexer")["spec"]["scaleTargetRef"].update(name="indexers"),
        "scaleTargetRef StatefulSet/indexers is not in the manifests",
    ),
    "a name no setting reads": (
        lambda o: _one(o, "ConfigMap", "streamfill")["data"].update(INDEXER_BATCHSIZE="500"),
        "INDEXER_BATCHSIZE is not a setting streamfill reads",
    ),
    "a setting the worker refuses": (
        lambda o: _one(o, "ConfigMap", "streamfill")["data"].update(INDEXER_CONCURRENCY="two"),
        "`streamfill indexer` is refused: INDEXER_CONCURRENCY must be an integer",
    ),
    "a command streamfill does not have": (
        lambda o: _container(o, "backfiller").update(args=["backfill"]),
        "argument COMMAND: invalid choice: 'backfill'",
    ),
    "metrics port and METRICS_PORT disagree": (
        lambda o: _one(o, "ConfigMap", "streamfill")["data"].update(METRICS_PORT="9200"),
        "port `metrics` 9100 != METRICS_PORT 9200",
    ),
    "a probe on an unnamed port": (
        lambda o: _container(o, "indexer")["livenessProbe"]["httpGet"].update(port="http"),
        "livenessProbe uses port http",
    ),
    "a liveness probe asking readiness": (
        lambda o: _container(o, "indexer")["livenessProbe"]["httpGet"].update(path="/readyz"),
        "livenessProbe asks /readyz; it must ask /healthz",
    ),
    "a Service that selects nothing": (
        lambda o: _one(o, "Service", "indexer")["spec"]["selector"].update(
            {"app.kubernetes.io/component": "x"}
        ),
        "Service/indexer: its selector matches no pod template",
    ),
    "a governing Service that is missing": (
        lambda o: _one(o, "StatefulSet", "indexer")["spec"].update(serviceName="indexer-headless"),
        "serviceName indexer-headless is not a headless Service",
    ),
    "an unknown ConfigMap": (
        lambda o: _container(o, "indexer")["envFrom"][0]["configMapRef"].update(name="streamfil"),
        "envFrom ConfigMap streamfil is not in the manifests",
    ),
}


@pytest.mark.parametrize("mistake", sorted(K8S_MISTAKES))
def test_each_kubernetes_check_catches_its_mistake(mistake: str) -> None:
    objects, _ = render_python()
    broken = copy.deepcopy(objects)
    mutate, expected = K8S_MISTAKES[mistake]
    mutate(broken)
    problems = check_k8s(broken)
    assert any(expected in p for p in problems), problems


DEPENDS = "      redis:\n        condition: service_healthy\n      "
COMPOSE_MISTAKES = [
    pytest.param("stop_grace_period: 60s\n", "stop_grace_periode: 60s\n", "'stop_grace_periode'", id="key"),
    pytest.param(
        "INDEXER_CONCURRENCY: ${INDEXER_CONCURRENCY:-2}", "INIT: true", "True is not of type", id="boolean"
    ),
    pytest.param(
        "${INDEXER_BATCH_SIZE:-500}", "${INDEXER_BATCH_SIZE:-500", "unterminated default", id="interp"
    ),
    pytest.param("INDEXER_BATCH_SIZE:", "INDEXER_BATCHSIZE:", "INDEXER_BATCHSIZE is not a setting", id="env"),
    pytest.param(
        "      postgres:\n        condition", "      postgress:\n        condition", "postgress", id="dep"
    ),
    pytest.param('command: ["indexer"]', 'command: ["indexr"]', "invalid choice: 'indexr'", id="command"),
    pytest.param(
        "${INDEXER_MAX_DELIVERIES:-5}", "five", "INDEXER_MAX_DELIVERIES must be an integer", id="value"
    ),
    pytest.param("- redis-data:/data", "- redis-dat:/data", "volume redis-dat is not declared", id="volume"),
    pytest.param("interval: 15s", "interval: 15 seconds", "'15 seconds' does not match", id="duration"),
    pytest.param(
        DEPENDS + "elasticsearch", DEPENDS + "devnet", "depends_on devnet, which a profile can", id="profile"
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), COMPOSE_MISTAKES)
def test_each_compose_check_catches_its_mistake(old: str, new: str, expected: str, tmp_path: Path) -> None:
    text = deploy_compose.COMPOSE_FILE.read_text()
    assert old in text, "the mutation no longer applies to the compose file: update the test"
    broken = tmp_path / "docker-compose.yml"
    # The build context is relative to the compose file: keep it pointing at the repository.
    broken.write_text(text.replace(old, new, 1).replace("context: ..", f"context: {COMPOSE.parent}"))
    problems = check_compose(broken)
    assert any(expected in p for p in problems), problems


def test_a_dockerfile_copying_a_missing_path_is_caught(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        (COMPOSE / "Dockerfile").read_text().replace("COPY devnet ./devnet", "COPY devnets ./devnet")
    )
    text = deploy_compose.COMPOSE_FILE.read_text()
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(text.replace("context: ..", f"context: {COMPOSE.parent}").replace(
        "dockerfile: compose/Dockerfile", f"dockerfile: {dockerfile}"))  # fmt: skip
    assert any("COPY devnets: not in the build context" in p for p in check_compose(compose))


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A}-$B-$$C", {"A": "1", "B": "2"}, "1-2-$C"),
        ("pg://u:${P:-pw}@h/${D:-db}", {}, "pg://u:pw@h/db"),
        ("${URL:-pg://u:${P:-pw}@h}", {}, "pg://u:pw@h"),
        ("${URL:-pg://u:${P:-pw}@h}", {"P": "s"}, "pg://u:s@h"),
    ],
)
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env)[0] == expected


@pytest.mark.parametrize("text", ["${A", "${A:-x", "${}", "${A:?needed}", "${A x}"])
def test_interpolation_refuses_what_compose_refuses(text: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(text, {})


def test_kustomize_features_beyond_resources_are_flagged(tmp_path: Path) -> None:
    for path in deploy_k8s.K8S_DIR.iterdir():
        (tmp_path / path.name).write_text(path.read_text())
    kustomization = tmp_path / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "namePrefix: prod-\n")
    _, problems = render_python(tmp_path)
    assert problems == ["kustomization.yaml: namePrefix: only `kubectl kustomize` renders this"]
