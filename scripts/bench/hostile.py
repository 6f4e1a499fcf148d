#!/usr/bin/env python3
"""Hostile-traffic benchmark for `serve`: what strangers' requests cost, and what a legitimate
delivery's latency is while they run. Started by scripts/bench-hostile.sh.

Attacks (plain HTTP on loopback, never signed with a secret the server holds):
  memory   N concurrent 25 MiB bodies with a well-formed but wrong signature, declared with
           Content-Length, then the same again chunked (no length): peak RSS growth.
  cpu      C connections sending 1 MiB bodies naming a served repository (so the server must
           hash them to refuse them), back to back: a signed delivery's latency meanwhile,
           against the same deliveries with no attack.
"""
import argparse, hashlib, hmac, json, os, socket, statistics, sys, threading, time, uuid

MIB = 1024 * 1024


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_head(port, headers):
    lines = [f"POST /webhook HTTP/1.1", f"Host: 127.0.0.1:{port}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_status(sock):
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
    return int(data.split(b" ", 2)[1])


def big_body_attack(port, size, chunked, results, i):
    wrong = "sha256=" + "0" * 64
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
               "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": wrong}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(size)
    block = b'{"padding":"' + b"x" * (64 * 1024 - 12)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(request_head(port, headers))
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            s.sendall(b"0\r\n\r\n")
        results[i] = read_status(s)
    except OSError as e:  # the server may close the connection once it has refused the body
        results[i] = f"closed after sending ({e.__class__.__name__})"
    finally:
        try:
            s.close()
        except Exception:
            pass


def memory_attack(pid, port, count, size):
    for chunked in (False, True):
        before_rss, before_hwm = rss_kib(pid, "VmRSS"), rss_kib(pid, "VmHWM")
        results = [None] * count
        threads = [threading.Thread(target=big_body_attack, args=(port, size, chunked, results, i)) for i in range(count)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
        hwm = rss_kib(pid, "VmHWM")
        kind = "chunked" if chunked else "Content-Length"
        answers = sorted({str(r) for r in results})
        print(f"memory  {count} x {size // MIB} MiB bodies ({kind}): RSS before {before_rss / 1024:.1f} MiB, "
              f"peak {hwm / 1024:.1f} MiB, peak growth {(hwm - max(before_rss, 0)) / 1024:.1f} MiB "
              f"(high-water mark before: {before_hwm / 1024:.1f} MiB); answers {answers}; {took:.1f} s")


def signed_delivery(secret, repo, job_id):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = json.dumps({"action": "queued", "workflow_job": {"id": job_id, "run_id": 1, "run_attempt": 1,
                       "status": "queued", "labels": ["self-hosted", "linux"], "created_at": now},
                       "repository": {"id": 42, "full_name": repo}}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, signature


def legit_latencies(port, secret, repo, count, pause, first_job):
    out = []
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    for n in range(count):
        body, signature = signed_delivery(secret, repo, first_job + n)
        head = request_head(port, {"Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
                                   "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature,
                                   "Content-Length": str(len(body)), "Connection": "keep-alive"})
        started = time.perf_counter()
        s.sendall(head + body)
        response = b""
        while b"\r\n\r\n" not in response:
            response += s.recv(65536)
        header, rest = response.split(b"\r\n\r\n", 1)
        length = next(int(l.split(b":")[1]) for l in header.split(b"\r\n") if l.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += s.recv(65536)
        out.append((time.perf_counter() - started) * 1000)
        status = int(header.split(b" ", 2)[1])
        if status not in (200, 202):
            raise SystemExit(f"legitimate delivery answered {status}: {rest!r}")
        time.sleep(pause)
    s.close()
    return out


def cpu_hog(port, repo, stop, counter, size):
    body = json.dumps({"repository": {"full_name": repo}, "padding": "x" * (size - 100)}).encode()
    head = request_head(port, {"Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
                               "X-GitHub-Delivery": "attack", "X-Hub-Signature-256": "sha256=" + "1" * 64,
                               "Content-Length": str(len(body)), "Connection": "keep-alive"})
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            while not stop.is_set():
                s.sendall(head + body)
                if read_status(s) is None:
                    break
                counter.append(1)
        except OSError:
            time.sleep(0.01)


def summary(name, values):
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"{name}: p50 {statistics.median(values):.2f} ms, p99 {p99:.2f} ms, max {values[-1]:.2f} ms over {len(values)}"


def cpu_attack(pid, port, secret, repo, connections, deliveries, size):
    quiet = legit_latencies(port, secret, repo, deliveries, 0.02, 10_000_000)
    print("cpu     " + summary("legitimate delivery, no attack", quiet))
    stop, counter = threading.Event(), []
    hogs = [threading.Thread(target=cpu_hog, args=(port, repo, stop, counter, size)) for _ in range(connections)]
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    for t in hogs:
        t.start()
    time.sleep(1)
    attacked = legit_latencies(port, secret, repo, deliveries, 0.02, 20_000_000)
    stop.set()
    for t in hogs:
        t.join()
    took = time.monotonic() - started
    refused = len(counter)
    cpu = cpu_seconds(pid) - cpu_before
    print("cpu     " + summary(f"legitimate delivery, {connections} connections of {size // 1024} KiB wrongly signed bodies", attacked))
    print(f"cpu     attack: {refused} bodies refused in {took:.1f} s ({refused / took:.0f}/s); server CPU "
          f"{cpu:.2f} s, {cpu / max(refused, 1) * 1000:.2f} ms per refused body (legitimate deliveries included)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", default="demo-webhook-secret")
    ap.add_argument("--repo", default="acme/payments-api")
    ap.add_argument("--bodies", type=int, default=32)
    ap.add_argument("--body-mib", type=int, default=25)
    ap.add_argument("--cpu-connections", type=int, default=4)
    ap.add_argument("--cpu-body-kib", type=int, default=1024)
    ap.add_argument("--deliveries", type=int, default=300)
    args = ap.parse_args()
    memory_attack(args.pid, args.port, args.bodies, args.body_mib * MIB)
    cpu_attack(args.pid, args.port, args.secret, args.repo, args.cpu_connections, args.deliveries,
               args.cpu_body_kib * 1024)


if __name__ == "__main__":
    main()
