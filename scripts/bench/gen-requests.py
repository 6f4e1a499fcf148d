#!/usr/bin/env python3
"""Generate signed workflow_job deliveries for scripts/bench/replay.lua (stdlib only).

Each job gets three deliveries (queued, in_progress, completed), each with its own
X-GitHub-Delivery GUID; jobs have distinct ids. Bodies are compact JSON (as GitHub sends them),
~7-8 KB, derived from a queued fixture.

To keep wrk's memory small the file does not hold every body: it holds three body templates (one
per action) cut at the fields that vary, then one short line per delivery with those fields' values
and the HMAC-SHA256 of the body that the values and template make. replay.lua reassembles the exact
bytes that were signed.

File format (all ASCII):
  gaa-replay 1
  vars <name> ...                                   variables, referred to by 1-based index
  header <Name>: <value>                            static request headers (repeated)
  template <index> <action> <holes> <var index> ... then holes+1 parts, each as "<length>\\n<bytes>\\n"
  deliveries <count>
  <job ordinal> <template index> <delivery guid> <hex signature> <value of var 1> ...
"""

import argparse
import base64
import hashlib
import hmac
import json
import random
import re
import sys
import uuid
from datetime import datetime, timedelta, timezone

VARS = ["job_id", "run_id", "node_id", "labels", "created_at", "started_at", "completed_at",
        "runner_id", "runner_name"]
VAR_INDEX = {name: i + 1 for i, name in enumerate(VARS)}
ACTIONS = ["queued", "in_progress", "completed"]
HOLE = re.compile(r'"@@N:(\w+)@@"|@@S:(\w+)@@')
LAG = 64  # jobs between a job's queued and its in_progress, and again until completed


def num(name):
    """A JSON number (or raw JSON) filled in per delivery."""
    return f"@@N:{name}@@"


def text(name):
    """Text filled in per delivery inside a JSON string."""
    return f"@@S:{name}@@"


def node_id(prefix, *ids):
    packed = bytes([0x90 + 1 + len(ids), 0x00])
    for i in ids:
        packed += (bytes([0xCE]) + i.to_bytes(4, "big")) if i < 2**32 else (bytes([0xCF]) + i.to_bytes(8, "big"))
    return prefix + "_" + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def templated_job(job, action):
    """The fixture's workflow_job with placeholders for what differs between deliveries."""
    api = job["url"].rsplit("/actions/jobs/", 1)[0]
    web = job["html_url"].rsplit("/actions/runs/", 1)[0]
    j = dict(job)
    j.update({
        "id": num("job_id"),
        "run_id": num("run_id"),
        "run_url": f"{api}/actions/runs/{text('run_id')}",
        "run_attempt": 1,
        "node_id": text("node_id"),
        "url": f"{api}/actions/jobs/{text('job_id')}",
        "html_url": f"{web}/actions/runs/{text('run_id')}/job/{text('job_id')}",
        "check_run_url": f"{api}/check-runs/{text('job_id')}",
        "labels": num("labels"),
        "created_at": text("created_at"),
        "status": action,
        "conclusion": None,
        "completed_at": None,
        "steps": [],
        "runner_id": None,
        "runner_name": None,
        "runner_group_id": None,
        "runner_group_name": None,
    })
    if action == "queued":
        j["started_at"] = text("created_at")
        return j
    s, c = text("started_at"), text("completed_at")
    running = action == "in_progress"
    names = ["Set up job", "Run actions/checkout@v4", "Install Rust toolchain", "cargo test --locked",
             "Post Run actions/checkout@v4", "Complete job"]
    j["steps"] = [
        {"name": name, "status": "in_progress" if running and n == 3 else ("queued" if running and n > 3 else "completed"),
         "conclusion": None if running and n >= 3 else "success", "number": n,
         "started_at": None if running and n > 3 else s, "completed_at": None if running and n >= 3 else (s if n < 3 else c)}
        for n, name in enumerate(names, start=1)
    ]
    j.update({"started_at": s, "runner_id": num("runner_id"), "runner_name": text("runner_name"),
              "runner_group_id": 1, "runner_group_name": "Default"})
    if action == "completed":
        j.update({"conclusion": "success", "completed_at": c})
    return j


def split(body):
    parts, holes, pos = [], [], 0
    for m in HOLE.finditer(body):
        parts.append(body[pos:m.start()])
        holes.append(VAR_INDEX[m.group(1) or m.group(2)])
        pos = m.end()
    parts.append(body[pos:])
    return parts, holes


def assemble(parts, holes, values):
    out = [parts[0]]
    for hole, part in zip(holes, parts[1:]):
        out.append(values[hole - 1])
        out.append(part)
    return "".join(out)


def schedule(jobs):
    """(ordinal, action) in the order a busy repository would send them: a job's in_progress comes
    LAG jobs after its queued, and its completed LAG jobs after that, so demand stays non-zero."""
    for step in range(jobs + 2 * LAG):
        for lag, action in ((0, "queued"), (LAG, "in_progress"), (2 * LAG, "completed")):
            ordinal = step - lag
            if 0 <= ordinal < jobs:
                yield ordinal, action


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", default="fixtures/webhooks/workflow_job.queued.json")
    ap.add_argument("--deliveries", type=int, default=60000, help="total deliveries, rounded down to a multiple of 3")
    ap.add_argument("--secret", default="demo-webhook-secret")
    ap.add_argument("--gpu-every", type=int, default=5, help="every Nth job asks for [self-hosted, linux, gpu] (0: never)")
    ap.add_argument("--seed", type=int, help="seed for delivery GUIDs (default: random)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)

    jobs = args.deliveries // 3
    if jobs < 1:
        ap.error("--deliveries must be at least 3")
    with open(args.fixture) as f:
        fixture = json.load(f)
    repo_id = fixture["repository"]["id"]
    owner_repo = fixture["repository"]["full_name"]
    rng = random.Random(args.seed)
    secret = args.secret.encode()

    templates = []
    for action in ACTIONS:
        doc = dict(fixture, action=action, workflow_job=templated_job(fixture["workflow_job"], action))
        templates.append(split(json.dumps(doc, separators=(",", ":"))))

    base_job, base_run = 31_000_000_000, 12_000_000_000
    # Jobs created now, as GitHub would send them: the server ends jobs queued for over a day.
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    sizes = []
    with open(args.output, "w", newline="\n") as out:
        out.write("gaa-replay 1\n")
        out.write("vars " + " ".join(VARS) + "\n")
        for name, value in (("Content-Type", "application/json"), ("User-Agent", "GitHub-Hookshot/bench"),
                            ("X-GitHub-Event", "workflow_job"), ("X-GitHub-Hook-ID", "498765432"),
                            ("X-GitHub-Hook-Installation-Target-Type", "repository"),
                            ("X-GitHub-Hook-Installation-Target-ID", str(repo_id))):
            out.write(f"header {name}: {value}\n")
        for index, (action, (parts, holes)) in enumerate(zip(ACTIONS, templates), start=1):
            out.write(f"template {index} {action} {len(holes)} {' '.join(map(str, holes))}\n")
            for part in parts:
                out.write(f"{len(part)}\n{part}\n")
        out.write(f"deliveries {jobs * 3}\n")
        for ordinal, action in schedule(jobs):
            job_id = base_job + ordinal
            gpu = args.gpu_every > 0 and ordinal % args.gpu_every == args.gpu_every - 1
            created = t0 + timedelta(seconds=ordinal // 10)
            started = created + timedelta(seconds=9)
            values = [
                str(job_id), str(base_run + ordinal // 4), node_id("CR", repo_id, job_id),
                '["self-hosted","linux","gpu"]' if gpu else '["self-hosted","linux"]',
                iso(created), iso(started), iso(started + timedelta(seconds=187)),
                str(3000 + ordinal % 2 if gpu else 2000 + ordinal % 5),
                f"payments-gpu-{ordinal % 2}" if gpu else f"payments-linux-{ordinal % 5}",
            ]
            tindex = ACTIONS.index(action)
            body = assemble(*templates[tindex], values).encode()
            sizes.append(len(body))
            signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
            guid = uuid.UUID(int=rng.getrandbits(128), version=4)
            if ordinal == 0:  # the assembled body must be the JSON we meant
                doc = json.loads(body)
                assert doc["action"] == action and doc["workflow_job"]["id"] == job_id, doc["workflow_job"]
            out.write(f"{ordinal} {tindex + 1} {guid} {signature} {' '.join(values)}\n")

    print(f"gen-requests: {len(sizes)} deliveries for {jobs} jobs of {owner_repo} -> {args.output} "
          f"(bodies {min(sizes)}-{max(sizes)} bytes, mean {sum(sizes) // len(sizes)})", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
