#!/usr/bin/env python3
"""Build the Prometheus Operator PrometheusRule from deploy/prometheus/alerts.yml.

alerts.yml is the only hand-edited copy of the rules. This script wraps its
`groups` into a PrometheusRule object and writes
deploy/kubernetes/overlays/prometheus-operator/prometheusrule.yaml.

    python3 deploy/prometheus/gen-prometheusrule.py          # regenerate
    python3 deploy/prometheus/gen-prometheusrule.py --check  # exit 1 if the committed file differs

Runbook links: every `runbook_url` in alerts.yml starts with RUNBOOK_BASE_URL below
and ends with an anchor of docs/runbook.md (--check verifies both). To point them
at your own copy of the runbook (a wiki, an internal Git server), give
`--runbook-base-url URL`: the PrometheusRule is written with that base, and
`--rules-out PATH` writes a plain rule file with it too, e.g.

    python3 deploy/prometheus/gen-prometheusrule.py \
        --runbook-base-url https://git.example.com/ops/huaweicloud-job-exporter/docs/runbook.md \
        --target /tmp/prometheusrule.yaml --rules-out /etc/prometheus/rules/huaweicloud-job-exporter.yml

scripts/check-deploy.sh runs it with --check.
"""

import argparse
import difflib
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy/prometheus/alerts.yml"
TARGET = ROOT / "deploy/kubernetes/overlays/prometheus-operator/prometheusrule.yaml"
RUNBOOK = ROOT / "docs/runbook.md"
# Where the committed rules point their runbook_url annotations.
RUNBOOK_BASE_URL = "https://github.com/huaweicloud-job-exporter/huaweicloud-job-exporter/blob/main/docs/runbook.md"

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


def runbook_anchors() -> set:
    """The GitHub-style anchors of the runbook's headings."""
    out = set()
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


def check_runbook_urls(rules) -> list:
    """Problems with the runbook_url annotations of alerts.yml, as messages."""
    anchors = runbook_anchors()
    problems = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            url = rule.get("annotations", {}).get("runbook_url", "")
            base, _, anchor = url.partition("#")
            if base != RUNBOOK_BASE_URL:
                problems.append(f"{rule['alert']}: runbook_url {url!r} does not start with {RUNBOOK_BASE_URL}#")
            elif anchor not in anchors:
                problems.append(f"{rule['alert']}: docs/runbook.md has no heading for #{anchor}")
    return problems


def rebase(text: str, base: str) -> str:
    """alerts.yml's text with every runbook link on `base` instead of RUNBOOK_BASE_URL."""
    return text.replace(RUNBOOK_BASE_URL + "#", base.rstrip("#") + "#")


def render(base: str = RUNBOOK_BASE_URL) -> str:
    rules = yaml.safe_load(rebase(SOURCE.read_text(encoding="utf-8"), base))
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
    parser.add_argument("--runbook-base-url", default=RUNBOOK_BASE_URL, help="where runbook.md is served")
    parser.add_argument("--target", type=pathlib.Path, default=TARGET, help="where to write the PrometheusRule")
    parser.add_argument("--rules-out", type=pathlib.Path, help="also write alerts.yml with the runbook base here")
    args = parser.parse_args()
    want = render(args.runbook_base_url)
    if args.check:
        problems = check_runbook_urls(yaml.safe_load(SOURCE.read_text(encoding="utf-8")))
        for p in problems:
            print(f"{SOURCE.relative_to(ROOT)}: {p}", file=sys.stderr)
        if problems:
            return 1
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
    args.target.write_text(want, encoding="utf-8")
    print(f"wrote {args.target}")
    if args.rules_out:
        args.rules_out.write_text(rebase(SOURCE.read_text(encoding="utf-8"), args.runbook_base_url), encoding="utf-8")
        print(f"wrote {args.rules_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
