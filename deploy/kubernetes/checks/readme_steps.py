#!/usr/bin/env python3
"""Check the README's Kubernetes steps, as written there, against what kustomize renders.

    python3 deploy/kubernetes/checks/readme_steps.py KUBECTL

The one `sh` block of README.md's "Deploy on Kubernetes" section is parsed, and for every
kustomization it applies (`kubectl apply -k PATH`, and the alternatives named in its comment):
  * the image `docker build -t` builds is the image every workload runs;
  * no Secret is rendered (`apply -k` would overwrite the one the README creates), and the Secret
    the README creates is the one the workload mounts, with every key it mounts;
  * every object is in the namespace the README creates;
  * the Service and port the README port-forwards to exist.
scripts/check-deploy.sh runs it.
"""
import re
import shlex
import subprocess
import sys

import yaml


def commands(readme):
    section = readme[readme.index("## Deploy on Kubernetes"):]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"expected one sh block in the README's Kubernetes section, found {len(blocks)}"
    out = []
    for line in blocks[0].replace("\\\n", " ").splitlines():
        code, _, comment = line.partition("#")
        out.append((shlex.split(code), comment.strip()))
    return out


def main(kubectl):
    cmds = commands(open("README.md", encoding="utf-8").read())

    def find(*prefix):
        return [w for w, _ in cmds if w[: len(prefix)] == list(prefix)]

    builds = find("docker", "build")
    built = {w[w.index("-t") + 1] for w in builds}
    assert len(built) == 1, f"docker build tags: {built}"
    built = built.pop()
    pushed = {w[w.index("push") + 1] for w in builds if "push" in w}
    assert pushed <= {built}, f"the README pushes {pushed} but builds {built}"
    namespaces = [w[3] for w in find("kubectl", "create", "namespace")]
    secret_cmds = [w for w in find("kubectl", "-n") if w[3:6] == ["create", "secret", "generic"]]
    assert len(namespaces) == 1 and len(secret_cmds) == 1, (namespaces, secret_cmds)
    ns, secret = namespaces[0], secret_cmds[0][6]
    assert secret_cmds[0][2] == ns, f"the Secret is created in {secret_cmds[0][2]}, the namespace is {ns}"
    keys = {a.split("=", 2)[1] for a in secret_cmds[0] if a.startswith("--from-file=")}
    paths = []
    for words, comment in cmds:
        if words[:3] == ["kubectl", "apply", "-k"]:
            paths.append(words[3])
            paths += re.findall(r"deploy/kubernetes/\S+", comment)
    assert paths, "no `kubectl apply -k` in the README"
    forwards = [w for w in find("kubectl", "-n") if w[3] == "port-forward"]

    for path in paths:
        rendered = subprocess.run([kubectl, "kustomize", path], check=True, capture_output=True, text=True)
        docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        assert "Secret" not in {d["kind"] for d in docs}, \
            f"{path} renders a Secret: `kubectl apply -k` would overwrite the one the README creates"
        assert any(d["kind"] == "Namespace" and d["metadata"]["name"] == ns for d in docs), f"{path}: no Namespace {ns}"
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == ns, f"{path}: {d['kind']} {d['metadata']['name']} is not in {ns}"
        workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
        assert workloads, f"{path}: no Deployment or StatefulSet"
        for w in workloads:
            spec = w["spec"]["template"]["spec"]
            images = {c["image"] for c in spec["containers"]}
            assert images == {built}, f"{path}: the {w['kind']} runs {images}, the README builds {built}"
            mounted = {}
            for v in spec.get("volumes", []):
                for src in v.get("projected", {}).get("sources", []):
                    if "secret" in src:
                        mounted.setdefault(src["secret"]["name"], set()).update(i["key"] for i in src["secret"]["items"])
                if "secret" in v:
                    mounted.setdefault(v["secret"]["secretName"], set())
            assert set(mounted) == {secret}, f"{path}: mounts the Secrets {sorted(mounted)}, the README creates {secret}"
            assert mounted[secret] <= keys, \
                f"{path}: mounts the keys {sorted(mounted[secret])}, the README's Secret has {sorted(keys)}"
        for f in forwards:
            name = f[4].split("/", 1)[1]
            port = int(f[5].split(":")[-1])
            svc = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
            assert svc and any(p["port"] == port for p in svc[0]["spec"]["ports"]), f"{path}: no Service {name} on port {port}"
        print(f"    {path}: image {built}, Secret {secret} {sorted(keys)}, namespace {ns}, as the README says")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except AssertionError as e:
        sys.exit(f"README.md, Deploy on Kubernetes: {e}")
