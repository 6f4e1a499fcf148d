#!/usr/bin/env python3
"""The scale benchmark's helpers (stdlib only): writes the runners, sends the open jobs, and reads
a process's memory. Used by scripts/bench-scale.sh and scripts/bench-metrics-api.sh.

  scale.py manifests DIR RUNNERS REPOS       runners as manifests, in 50 namespaces, one secret
  scale.py paths FILE RUNNERS [READ]         a wrk script that GETs random runners: READ is
                                             `runner` (the read API KEDA's metrics-api trigger
                                             reads, the default), `custom` (custom.metrics.k8s.io,
                                             one runner) or `namespace` (custom.metrics.k8s.io,
                                             `*`: every runner of a random namespace)
  scale.py send URL SECRET JOBS REPOS        queued deliveries, JOBS jobs over REPOS repositories
  scale.py rss PID                           VmRSS and VmHWM of PID, in MiB
"""

import hashlib
import hmac
import http.client
import json
import random
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

NAMESPACES = 50
SIZES = 4  # runners per repository, told apart by a size label


def manifests(directory, runners, repos):
    with open(f"{directory}/runners.yaml", "w") as out:
        for i in range(runners):
            out.write(f"""---
apiVersion: runner.devjoes.com/v1alpha1
kind: ScaledActionRunner
metadata: {{name: runner-{i}, namespace: team-{i % NAMESPACES}}}
spec: {{owner: acme, repo: repo-{i % repos}, maxRunners: 10, runner: {{runnerLabels: "linux,size-{(i // repos) % SIZES}"}}}}
""")


CUSTOM = "/apis/custom.metrics.k8s.io/v1beta1/namespaces"
READS = {
    "runner": "'/api/v1/namespaces/team-%d/scaledactionrunners/runner-%d', i % {ns}, i",
    "custom": "'" + CUSTOM + "/team-%d/scaledactionrunners/runner-%d/desired-runners', i % {ns}, i",
    "namespace": "'" + CUSTOM + "/team-%d/scaledactionrunners/*/desired-runners', i % {ns}",
}


def paths(file, runners, read="runner"):
    with open(file, "w") as out:
        out.write("local paths = {}\n")
        out.write(f"for i = 0, {runners - 1} do paths[#paths + 1] = "
                  f"string.format({READS[read].format(ns=NAMESPACES)}) end\n")
        out.write("math.randomseed(7)\nrequest = function() return wrk.format('GET', paths[math.random(#paths)]) end\n")


def send(url, secret, jobs, repos, threads=4):
    """Sends one queued delivery per job over `threads` keep-alive connections; exits non-zero
    unless every delivery was acknowledged with 202."""
    target = urlsplit(url)
    created = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    counts = {"accepted": 0, "other": 0}
    lock = threading.Lock()
    rng = random.Random(11)
    sizes = [rng.randrange(SIZES) for _ in range(jobs)]

    def worker(first):
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        accepted = other = 0
        for job in range(first, jobs, threads):
            repo = job % repos
            body = json.dumps({
                "action": "queued",
                "workflow_job": {
                    "id": 10_000_000 + job, "run_id": 5_000_000 + job // 4, "run_attempt": 1,
                    "status": "queued", "conclusion": None,
                    "labels": ["self-hosted", "linux", f"size-{sizes[job]}"],
                    "created_at": created, "started_at": created, "runner_id": None, "name": "build",
                },
                "repository": {"id": 700_000 + repo, "name": f"repo-{repo}", "full_name": f"acme/repo-{repo}",
                               "owner": {"login": "acme"}},
                "sender": {"login": "octocat"},
            }, separators=(",", ":")).encode()
            signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            connection.request("POST", "/webhook", body, {
                "Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
                "X-GitHub-Delivery": str(uuid.UUID(int=rng.getrandbits(128) ^ job)),
                "X-Hub-Signature-256": signature,
            })
            response = connection.getresponse()
            response.read()
            if response.status == 202:
                accepted += 1
            else:
                other += 1
        with lock:
            counts["accepted"] += accepted
            counts["other"] += other

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    took = time.monotonic() - started
    print(f"sent {jobs} queued deliveries in {took:.1f} s ({jobs / took:.0f}/s): "
          f"{counts['accepted']} accepted, {counts['other']} not")
    if counts["accepted"] != jobs:
        sys.exit(1)


def rss(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    print(f"{fields['VmRSS']:.1f} {fields['VmHWM']:.1f}")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "manifests":
        manifests(args[0], int(args[1]), int(args[2]))
    elif command == "paths":
        paths(args[0], int(args[1]), *args[2:3])
    elif command == "send":
        send(args[0], args[1].encode(), int(args[2]), int(args[3]))
    elif command == "rss":
        rss(args[0])
    else:
        sys.exit(f"unknown command {command}")
