"""Check rendered Kubernetes manifests offline: schemas, vm-bot's setting names, REPLICA_ID's length, no Secrets.

    python .ci/check_manifests.py RENDERED.yaml [...]      (what .ci/deploy-check.sh runs for every overlay)

Every object is validated strictly (unknown fields are errors, so a misspelt field cannot be silently ignored by the
API server) against the oldest and the newest Kubernetes version kubernetes-validate bundles.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from bot.config import SETTING_NAMES

OLDEST_KUBERNETES = "1.25"
REPLICA_ID_MAX = 48  # bot.config's REPLICA_ID rule
POD_NAME_SUFFIX = len("-0123456789-abcde")  # a Deployment's pods: <name>-<pod-template-hash>-<5 random letters>


def schema_problems(obj: dict[str, Any]) -> list[str]:
    """Return why obj does not match the Kubernetes schemas (empty when it does)."""
    problems = []
    for version in (OLDEST_KUBERNETES, kubernetes_validate.latest_version()):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(step) for step in exc.path) or "(top level)"
            problems.append(f"Kubernetes {exc.version}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"Kubernetes {version}: no schema: {exc.message}")
    return problems


def deployment_problems(deployment: dict[str, Any], config_maps: dict[str, dict[str, Any]]) -> list[str]:
    """Return the setting names vm-bot would not know, and a pod name REPLICA_ID would refuse."""
    problems = []
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        env = container.get("env", [])
        names = [entry["name"] for entry in env]
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                names += list(config_maps.get(source["configMapRef"]["name"], {}).get("data", {}))
        unknown = [name for name in names if name not in SETTING_NAMES]
        problems += [f"container {container['name']}: {name} is not a vm-bot setting" for name in unknown]
        if any(entry["name"] == "REPLICA_ID" and _field(entry) == "metadata.name" for entry in env):
            problems += _pod_name_problems(deployment["metadata"]["name"])
    return problems


def _field(entry: dict[str, Any]) -> str | None:
    """Return the pod field an environment entry is taken from (None for a value or a Secret)."""
    return entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")


def _pod_name_problems(deployment_name: str) -> list[str]:
    """Return why this Deployment's pod names would be refused as REPLICA_IDs (empty when they would not)."""
    longest = len(deployment_name) + POD_NAME_SUFFIX
    if longest <= REPLICA_ID_MAX:
        return []
    return [
        f"its pods' names (REPLICA_ID) would reach {longest} characters, over {REPLICA_ID_MAX}: shorten the "
        f"Deployment's name (with its prefix and suffix) to {REPLICA_ID_MAX - POD_NAME_SUFFIX} characters"
    ]


def check(path: Path) -> list[str]:
    """Return every problem of one rendered overlay, each naming its object."""
    objects = [obj for obj in yaml.safe_load_all(path.read_text()) if obj]
    if not objects:
        return [f"{path}: renders nothing"]
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    problems = []
    for obj in objects:
        where = f"{path.name}: {obj['kind']}/{obj['metadata']['name']}"
        found = schema_problems(obj)
        if obj["kind"] == "Secret":
            found.append("a Secret in the output would overwrite the operator's: mark it local-config")
        if obj["kind"] == "Deployment":
            found += deployment_problems(obj, config_maps)
        problems += [f"{where}: {problem}" for problem in found]
    return problems


def main(paths: list[str]) -> int:
    """Check every file; print each problem and return 1 if there were any."""
    problems = [problem for path in paths for problem in check(Path(path))]
    for problem in problems:
        print(f"deploy check: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"deploy check: {len(paths)} rendered overlay(s) valid for Kubernetes {OLDEST_KUBERNETES} to "
            f"{kubernetes_validate.latest_version()}"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
