"""Offline validation of the deployment files: compose/k8s/ (kustomize) and compose/docker-compose.yml.

    python compose/validate.py            # Python only (the test suite does the same in-process)
    python compose/validate.py --kubectl  # also render with `kubectl kustomize` (make validate-deploy)

Kubernetes objects are checked against the OpenAPI schemas that `kubernetes-validate` ships (strict:
unknown fields fail), the KEDA ScaledObject against compose/json-schemas/keda-scaledobject.schema.json,
the compose file against compose/json-schemas/compose-subset.schema.json. Then what no schema knows:
references between objects resolve, every streamfill container runs a real `streamfill` command
whose variables are settings streamfill reads, with values its own settings layer accepts, and
every KEDA trigger watches a stream its target reads, with the group it reads it with.
Exit 0: valid; 1: problems, one line each; 2: a tool is missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from deploy_compose import check_compose
from deploy_k8s import check_k8s, cluster_variant, compare_renderings, render_kubectl, render_python


def problems(*, kubectl: bool) -> list[str]:
    objects, found = render_python()
    if kubectl:
        found += compare_renderings(objects, render_kubectl())
    return found + check_k8s(objects) + check_k8s(cluster_variant(objects)) + check_compose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", action="store_true", help="also render with `kubectl kustomize`")
    args = parser.parse_args(argv)
    try:
        found = problems(kubectl=args.kubectl)
    except FileNotFoundError as exc:
        print(f"validate: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"validate: `kubectl kustomize` failed: {exc.stderr.strip()}", file=sys.stderr)
        return 1
    for line in found:
        print(line)
    print(f"deployment files: {len(found)} problem(s)" if found else "deployment files: valid")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
