"""Print compose/k8s/cluster-autoscaling.yaml for N partitions (docs/cluster.md):

    uv run python compose/gen_cluster_autoscaling.py --partitions 48 [--prefix P] \\
        > compose/k8s/cluster-autoscaling.yaml

One named `redis-cluster-streams` trigger per partition of each stream a worker reads, summed by
`scalingModifiers.formula` (KEDA scales on the largest trigger otherwise). tests/test_deploy.py
checks that the committed file is this script's output for 6 partitions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers._partitions import partitioning

# (workload, max replicas, [(stream, consumer group, lag one replica should carry)])
WORKLOADS = (
    ("backfiller", 10, (("repo_backfill", "repo_backfill_group", 2000),)),
    (
        "indexer",
        8,
        (
            ("firehose_backfill", "firehose_group", 50000),
            ("firehose_live", "firehose_group", 20000),
            ("label_live", "label_group", 20000),
        ),
    ),
)

HEADER = """\
# KEDA autoscaling on Redis Cluster with partitioned streams (docs/cluster.md): use this file
# INSTEAD of autoscaling.yaml in kustomization.yaml when STREAMFILL_PARTITIONS is {n} (set it in
# the ConfigMap) and REDIS_ADDRESS lists cluster nodes (host:port, comma-separated; any subset).
# `compose/validate.py` checks it as that variant (autoscaling.yaml swapped for this file).
# Generated: `uv run python compose/gen_cluster_autoscaling.py --partitions {n}`.
#
# KEDA's Redis scalers read one stream each, and with several triggers the HPA scales on the
# LARGEST, not the sum: a backlog spread over {n} partitions would look {n} times smaller. So every
# partition is a named trigger and `scalingModifiers.formula` adds them up (KEDA >= 2.12):
# the target is then in "replicas' worth of lag" (each stream's sum divided by the lag one
# replica should carry), so the streams of the indexer add up too instead of the largest
# winning. Partition keys are `{{<name>:<index>[:<n>]}}` (Keys.partition: tags spread over the
# slot ranges). With STREAMFILL_PREFIX set, generate with --prefix.
"""

OBJECT = """\
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: streamfill
    app.kubernetes.io/component: {name}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: StatefulSet
    name: {name}
  minReplicaCount: 1
  maxReplicaCount: {max_replicas}
  pollingInterval: 15
  cooldownPeriod: 300
  advanced:
    scalingModifiers:
      # One replica per unit: the sum over partitions of each stream's lag, per replica's share.
      formula: "{formula}"
      target: "1"
      activationTarget: "0"
      metricType: AverageValue
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 300
          policies:
            - type: Pods
              value: 1
              periodSeconds: 120
  triggers:
"""

TRIGGER = """\
    - type: redis-cluster-streams
      name: {name}
      metadata:
        addressesFromEnv: REDIS_ADDRESS
        stream: "{stream}"
        consumerGroup: {group}
        lagCount: "{lag}"
        activationLagCount: "1"
"""


def render(n: int, prefix: str = "") -> str:
    parts = partitioning(prefix, n)
    out = [HEADER.format(n=n)]
    for name, max_replicas, streams in WORKLOADS:
        terms: list[str] = []
        triggers: list[str] = []
        for stream, group, lag in streams:
            keys = parts.partition_keys(stream)
            names = [stream if len(keys) == 1 else f"{stream}_{i}" for i in range(len(keys))]
            terms.append(f"({' + '.join(names)}) / {lag}")
            for trigger, key in zip(names, keys, strict=True):
                triggers.append(TRIGGER.format(name=trigger, stream=key, group=group, lag=lag))
        out.append(OBJECT.format(name=name, max_replicas=max_replicas, formula=" + ".join(terms)))
        out += triggers
    return "".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    sys.stdout.write(render(args.partitions, args.prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
