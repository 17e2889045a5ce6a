#!/usr/bin/env python3
"""Check the NetworkPolicies of rendered kustomizations.

    python3 deploy/kubernetes/checks/networkpolicies.py RENDERED.yaml...

  * every ingress rule names its sources (`from:`): the metrics port also serves /-/reload and
    the registration API, so it must not be open to every pod;
  * a bundle whose config.yml takes keys from the ECS/CCE metadata service (`source: metadata`, or
    an account with no credentials, whose SDK chain ends there) may reach 169.254.169.254:80.
scripts/check-deploy.sh runs it.
"""
import ipaddress
import sys

import yaml

METADATA = ipaddress.ip_address("169.254.169.254")


def needs_metadata(docs):
    for cm in (d for d in docs if d["kind"] == "ConfigMap" and "config.yml" in d.get("data", {})):
        for acc in yaml.safe_load(cm["data"]["config.yml"]).get("accounts", []):
            if acc.get("source") == "metadata":
                return True
            if not {"access_key", "iam", "source"} & set(acc):
                return True
    return False


def allows_metadata(rule):
    ports = rule.get("ports")
    if ports and not any(p.get("port") == 80 for p in ports):
        return False
    to = rule.get("to")
    return not to or any("ipBlock" in t and METADATA in ipaddress.ip_network(t["ipBlock"]["cidr"]) for t in to)


def main(paths):
    for path in paths:
        docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
        pols = [d for d in docs if d["kind"] == "NetworkPolicy"]
        assert pols, f"{path}: no NetworkPolicy"
        for pol in pols:
            for rule in pol["spec"].get("ingress", []):
                assert rule.get("from"), f"{path}: NetworkPolicy {pol['metadata']['name']} admits ingress from any pod"
        metadata = needs_metadata(docs)
        if metadata:
            assert any(allows_metadata(r) for p in pols for r in p["spec"].get("egress", [])), \
                f"{path}: config.yml takes keys from the metadata service, but no egress to 169.254.169.254:80"
        print(f"    {path.rsplit('/', 1)[-1]}: ingress restricted; metadata service "
              f"{'needed and allowed' if metadata else 'not needed'}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except AssertionError as e:
        sys.exit(str(e))
