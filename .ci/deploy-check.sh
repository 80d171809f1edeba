#!/usr/bin/env bash
# Check deploy/ offline: render every Kubernetes overlay with `kubectl kustomize` and validate what it renders
# against the Kubernetes schemas (.ci/check_manifests.py, with the dev extra's kubernetes-validate), then check the
# Prometheus alert rules and run their unit tests with promtool. Any failure stops CI with the tool's own message.
# (The Grafana dashboard's metric names are checked against a live scrape by tests/test_deploy_files.py.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

for tool in kubectl promtool; do
    if ! command -v "$tool" >/dev/null; then
        echo "deploy check: $tool is not installed (promtool: apt-get install prometheus; .ci/run does that)" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

overlays=(deploy/kubernetes/overlays/*/)
rendered=()
for overlay in "${overlays[@]}"; do
    name="$(basename "$overlay")"
    if ! kubectl kustomize "$overlay" >"$work/$name.yaml"; then
        echo "deploy check: kubectl kustomize $overlay failed" >&2
        exit 1
    fi
    echo "deploy check: $overlay renders $(grep -c '^kind:' "$work/$name.yaml") objects:" \
        "$(grep '^kind:' "$work/$name.yaml" | cut -d' ' -f2 | paste -sd' ')"
    rendered+=("$work/$name.yaml")
done
python .ci/check_manifests.py "${rendered[@]}"

promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
