#!/usr/bin/env python3
"""Renders the kraken chart offline with Helm's own template engine, as `helm template` does.

    deploy/helm/render.py [--release NAME] [--namespace NS] [--values JSON] > objects.yaml

The `helm` binary is not packaged for Debian; this uses the Helm v4 SDK through the PyPI
package `helm-python-sdk` (a C binding of Helm's Go library: `pip install helm-python-sdk`).
The objects are printed as YAML documents, in the order of their templates. `--lint` lints the
chart first (as `helm lint`) and fails on errors. deploy/kubernetes/kraken.yaml is this
script's output with `--manifests` and the defaults (`--release kraken --namespace kraken`):

    deploy/helm/render.py --manifests > deploy/kubernetes/kraken.yaml

`--manifests` renders for plain manifests checked into a repository: the publish token's
Secret is left out (`publishToken.existingSecret` is set to PUBLISH_TOKEN_SECRET unless
`--values` sets it), so the files hold no token and render the same every time; the operator
creates that Secret (see deploy/kubernetes/kustomization.yaml).
"""

import argparse
import json
import sys
from pathlib import Path

import helm_python as helm

CHART = Path(__file__).resolve().parent / "kraken"
# The Secret deploy/kubernetes/ expects the operator to create (key `publish-token`).
PUBLISH_TOKEN_SECRET = "kraken-publish-token"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="kraken")
    parser.add_argument("--namespace", default="kraken")
    parser.add_argument("--values", default="{}", help="values as a JSON object")
    parser.add_argument("--lint", action="store_true")
    parser.add_argument(
        "--manifests",
        action="store_true",
        help=f"leave the publish token's Secret out (it is {PUBLISH_TOKEN_SECRET}, made by hand)",
    )
    args = parser.parse_args()
    values = json.loads(args.values)
    if args.manifests:
        token = values.setdefault("publishToken", {})
        token.setdefault("existingSecret", PUBLISH_TOKEN_SECRET)
    if args.lint:
        report = helm.lint(str(CHART), values=values, namespace=args.namespace, strict=True)
        # Severity 2 is a warning, 3 an error; 1 (info) is advice such as "icon is recommended".
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        problems += report.get("errors") or []
        if problems:
            print(f"helm lint: {problems}", file=sys.stderr)
            return 1
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=args.release, namespace=args.namespace)
    flags = " --manifests" if args.manifests else ""
    out = [
        "# Rendered from deploy/helm/kraken by deploy/helm/render.py"
        f"{flags} --release {args.release} --namespace {args.namespace}: do not edit by hand."
    ]
    for path in sorted(manifests):
        if not path.endswith(".yaml"):
            continue  # NOTES.txt
        for document in manifests[path].split("\n---"):
            body = "\n".join(
                line for line in document.splitlines() if line.strip() != "---"
            ).strip()
            if any(l.strip() and not l.lstrip().startswith("#") for l in body.splitlines()):
                out.append(f"---\n# Source: {path}\n{body}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
