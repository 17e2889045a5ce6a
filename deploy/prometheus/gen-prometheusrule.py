#!/usr/bin/env python3
"""Build the Prometheus Operator PrometheusRule from deploy/prometheus/alerts.yml.

alerts.yml is the only hand-edited copy of the rules. This script wraps its
`groups` into a PrometheusRule object and writes
deploy/kubernetes/overlays/prometheus-operator/prometheusrule.yaml.

    python3 deploy/prometheus/gen-prometheusrule.py          # regenerate
    python3 deploy/prometheus/gen-prometheusrule.py --check  # exit 1 if the committed file differs

scripts/check-deploy.sh runs it with --check.
"""

import argparse
import difflib
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy/prometheus/alerts.yml"
TARGET = ROOT / "deploy/kubernetes/overlays/prometheus-operator/prometheusrule.yaml"

HEADER = """\
# GENERATED FILE - DO NOT EDIT.
# Built from deploy/prometheus/alerts.yml by deploy/prometheus/gen-prometheusrule.py;
# edit alerts.yml and run that script. CI (scripts/check-deploy.sh) fails if they differ.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def render() -> str:
    rules = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))
    if set(rules) != {"groups"}:
        raise SystemExit(f"{SOURCE}: expected only a top-level 'groups' key, got {sorted(rules)}")
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "huaweicloud-job-exporter",
            "labels": {
                "app.kubernetes.io/name": "huaweicloud-job-exporter",
                "app.kubernetes.io/component": "alerting-rules",
            },
        },
        "spec": {"groups": rules["groups"]},
    }
    body = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; fail if the committed file differs")
    args = parser.parse_args()
    want = render()
    if args.check:
        have = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if have != want:
            sys.stdout.writelines(
                difflib.unified_diff(
                    have.splitlines(keepends=True),
                    want.splitlines(keepends=True),
                    fromfile=str(TARGET.relative_to(ROOT)),
                    tofile="generated from deploy/prometheus/alerts.yml",
                )
            )
            print(
                f"\n{TARGET.relative_to(ROOT)} is out of date: run python3 deploy/prometheus/gen-prometheusrule.py",
                file=sys.stderr,
            )
            return 1
        print(f"{TARGET.relative_to(ROOT)} matches deploy/prometheus/alerts.yml")
        return 0
    TARGET.write_text(want, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
