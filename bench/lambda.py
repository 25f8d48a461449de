#!/usr/bin/env python3
"""The Lambda-shaped benchmark (run it with bench/lambda.sh).

The release binary runs `cdc-batcher replay --window` (the function's window
code path: spool every batch, write each table's files in the window's final
invocation) in a cgroup whose CPU quota is a Lambda memory size's share of one
core (Lambda: 1,769 MB = one vCPU, proportionally below) and whose memory
limit is that size, writing to a local S3 server (moto) through a proxy that
adds S3's latency to every request. One window holds the whole stream: the
final invocation's work is the window's data, whatever the window's length.

Reports per memory size and table count: the final invocation's wall time,
the mean batch (spool) invocation, billed GB-s per million rows (the sum of
invocation durations times the memory size), peak RSS; and the cold start
(process start until the handler is ready) under the same quota.
"""
import glob
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench", "lambda")
# CDC_BATCHER_BIN: another build to measure (e.g. an earlier commit, for an A/B run).
BIN = os.environ.get("CDC_BATCHER_BIN", os.path.join(ROOT, "target", "release", "cdc-batcher"))
PY = os.path.join(ROOT, ".venv", "bin", "python")
MEMORY = [int(m) for m in os.environ.get("MEMORY_SIZES", "128 512 1769").split()]
TABLES = [int(t) for t in os.environ.get("TABLES_LIST", "1 20 200").split()]
LATENCY_MS = float(os.environ.get("LATENCY_MS", "30"))
WINDOW = int(os.environ.get("WINDOW", "240"))
CG = os.environ.get("CGROUP_ROOT", "/sys/fs/cgroup")
RUN_TIMEOUT = int(os.environ.get("RUN_TIMEOUT", "300"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


class Cgroup:
    """A CPU quota and memory limit (cgroup v1 cpu + memory, or v2)."""

    def __init__(self, memory_mb):
        self.name = f"cdc-bench-{memory_mb}"
        share = min(1.0, memory_mb / 1769)
        period = 100_000
        quota = int(period * share)
        self.v2 = os.path.exists(os.path.join(CG, "cgroup.controllers"))
        if self.v2:
            self.dirs = [os.path.join(CG, self.name)]
            os.makedirs(self.dirs[0], exist_ok=True)
            self._write(self.dirs[0], "cpu.max", f"{quota} {period}")
            self._write(self.dirs[0], "memory.max", str(memory_mb << 20))
        else:
            cpu, mem = os.path.join(CG, "cpu", self.name), os.path.join(CG, "memory", self.name)
            self.dirs = [cpu, mem]
            for d in self.dirs:
                os.makedirs(d, exist_ok=True)
            self._write(cpu, "cpu.cfs_period_us", str(period))
            self._write(cpu, "cpu.cfs_quota_us", str(quota))
            self._write(mem, "memory.limit_in_bytes", str(memory_mb << 20))
        self.share = share

    @staticmethod
    def _write(d, f, v):
        with open(os.path.join(d, f), "w") as fh:
            fh.write(v)

    def wrap(self, argv):
        """argv run inside the group (the shell joins it, then execs)."""
        join = " ".join(f"echo $$ > {d}/cgroup.procs;" for d in self.dirs)
        return ["sh", "-c", f'{join} exec "$@"', "sh", *argv]


def check_quota(group):
    """CPU seconds a busy loop gets in 2 s of wall time inside the group."""
    code = "import time\nt=time.time()\nwhile time.time()-t<2: pass"
    p = subprocess.run(group.wrap(["/usr/bin/time", "-f", "%e %U %S", sys.executable, "-c", code]),
                       capture_output=True, text=True)
    wall, user, sys_ = map(float, p.stderr.split()[-3:])
    return (user + sys_) / wall


def events_for(tables):
    batch = int(os.environ.get("BATCH_SIZE", "1000"))
    d = os.path.join(OUT, f"events-{tables}" + ("" if batch == 1000 else f"-b{batch}"))
    if not os.path.exists(os.path.join(d, "manifest.json")):
        rows = int(os.environ.get("ROWS", "141000"))
        subprocess.run([PY, os.path.join(ROOT, "..", "shared", "corpus", "make_events.py"),
                        "--synthetic", "--rows", str(rows), "--tables", str(tables),
                        "--batch-size", str(batch), "--seed", "2026", "--compact", "--out-dir", d],
                       check=True, stdout=subprocess.DEVNULL)
    files = sorted(glob.glob(os.path.join(d, "shard*.json")))
    payload = 0
    import base64
    for f in files:
        for r in json.load(open(f))["Records"]:
            payload += len(base64.b64decode(r["kinesis"]["data"]))
    return files, payload


def main():
    os.makedirs(OUT, exist_ok=True)
    moto_port, proxy_port = free_port(), free_port()
    moto = subprocess.Popen([os.path.join(ROOT, ".venv", "bin", "moto_server"), "-H", "127.0.0.1",
                             "-p", str(moto_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "latency_proxy.py"),
                              str(proxy_port), str(moto_port), str(LATENCY_MS)])
    try:
        wait_port(moto_port)
        wait_port(proxy_port)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
        s3.create_bucket(Bucket="bench")
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy_port}",
               "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
               "S3_FORCE_PATH_STYLE": "true", "FLUSH_MODE": "window", "LOG_LEVEL": "warn"}
        results = []
        for mb in MEMORY:
            group = Cgroup(mb)
            got = check_quota(group)
            print(f"{mb} MB: quota {group.share:.3f} of a core, a busy loop got {got:.3f}", file=sys.stderr)
            start = cold_start(group, env)
            for tables in TABLES:
                files, payload = events_for(tables)
                run_env = {**env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(mb)}
                prefix = f"s3://bench/{mb}-{tables}/"
                argv = ["/usr/bin/time", "-f", "%e %U %S %M", BIN, "replay", "--window", str(WINDOW),
                        "--output", prefix, *files]
                row = {"memory_mb": mb, "tables": tables, "quota": group.share, "quota_seen": got,
                       "cold_start_ms": start, "json_mb": payload / 1e6}
                try:
                    p = subprocess.run(group.wrap(argv), capture_output=True, text=True, env=run_env,
                                       timeout=RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    # Near its memory limit a process can thrash in reclaim instead of being killed.
                    row["failed"] = f"did not finish in {RUN_TIMEOUT} s (at its memory limit)"
                    results.append(row)
                    continue
                try:
                    summary = json.loads(p.stdout.strip().splitlines()[-1])
                    wall, user, sys_, rss = p.stderr.split()[-4:]
                except (IndexError, ValueError):
                    killed = "signal 9" in p.stderr
                    row["failed"] = ("out of memory (killed at the cgroup's limit)" if killed
                                     else f"exit {p.returncode}: {p.stderr[-300:]}")
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr)
                    continue
                row.update({
                    "exit": p.returncode, "errors": summary["errors"][:3],
                    "rows": summary["rows_written"], "files": summary["files"],
                    "final_invocations": summary["final_invocations"],
                    "final_s": summary["final_invocation_max_seconds"],
                    "batch_invocations": summary["batch_invocations"],
                    "batch_mean_s": summary["batch_invocation_mean_seconds"],
                    "total_s": summary["seconds"], "cpu_s": float(user) + float(sys_),
                    "peak_rss_mib": int(rss) / 1024,
                })
                row["gb_s_per_million_rows"] = row["total_s"] * mb / 1024 / max(row["rows"], 1) * 1e6
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
            results.extend(reference(group, mb))
        with open(os.path.join(OUT, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        print_table(results)
    finally:
        proxy.kill()
        moto.kill()


def reference(group, mb):
    """The pandas + pyarrow reference (bench/reference_lambda.py) on the 20-table
    stream in the same group, writing to a local directory (no S3 latency: in
    its favour). Its invocations are the event files, run in one process."""
    if 20 not in TABLES:
        return []
    files, payload = events_for(20)
    out = os.path.join(OUT, f"reference-{mb}")
    subprocess.run(["rm", "-rf", out], check=True)
    argv = ["/usr/bin/time", "-f", "%e %U %S %M", PY, os.path.join(ROOT, "bench", "reference_lambda.py"),
            "--output", out, *files]
    row = {"memory_mb": mb, "tables": 20, "reference": True, "json_mb": payload / 1e6}
    try:
        p = subprocess.run(group.wrap(argv), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        row["failed"] = f"did not finish in {RUN_TIMEOUT} s (at its memory limit)"
        return [row]
    try:
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        wall, user, sys_, rss = p.stderr.split()[-4:]
    except (IndexError, ValueError):
        last = p.stderr.strip().splitlines()[-2:] if p.stderr.strip() else []
        killed = "signal 9" in p.stderr or "MemoryError" in p.stderr
        row["failed"] = ("out of memory" if killed else f"exit {p.returncode}: {' / '.join(last)}")
        print(json.dumps(row), file=sys.stderr)
        return [row]
    row.update({"rows": summary["rows"], "total_s": float(wall), "cpu_s": float(user) + float(sys_),
                "peak_rss_mib": int(rss) / 1024})
    row["gb_s_per_million_rows"] = row["total_s"] * mb / 1024 / max(row["rows"], 1) * 1e6
    print(json.dumps(row), file=sys.stderr)
    return [row]


def cold_start(group, env):
    vals = []
    run_env = {**env, "S3_BUCKET_NAME": "bench", "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9",
               "LOG_LEVEL": "info"}
    for _ in range(9):
        p = subprocess.run(group.wrap([BIN]), capture_output=True, text=True, env=run_env)
        m = re.search(r'"startup_ms":([\d.]+)', p.stderr)
        if m:
            vals.append(float(m.group(1)))
    return statistics.median(vals) if vals else None


def print_table(results):
    print(f"Latency proxy: {LATENCY_MS:g} ms per request. One window of the whole stream "
          f"(--window {WINDOW}).\n")
    print("| memory | tables | JSON MB | final invocation | batch invocation (mean of n) "
          "| billed GB-s per million rows | peak RSS | cold start |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if r.get("reference"):
            continue
        if "failed" in r:
            print(f"| {r['memory_mb']} MB | {r['tables']} | {r['json_mb']:.1f} | "
                  f"{r['failed'][:80]} | | | | |".replace("\n", " "))
            continue
        start = f"{r['cold_start_ms']:.1f} ms" if r["cold_start_ms"] else "-"
        print(f"| {r['memory_mb']} MB | {r['tables']} | {r['json_mb']:.1f} | {r['final_s']:.2f} s "
              f"| {r['batch_mean_s'] * 1000:.0f} ms ({r['batch_invocations']}) "
              f"| {r['gb_s_per_million_rows']:.1f} | {r['peak_rss_mib']:.0f} MiB | {start} |")
    refs = [r for r in results if r.get("reference")]
    if refs:
        print("\nThe pandas + pyarrow reference, 20 tables, same cgroups, local directory:\n")
        print("| memory | wall time, whole stream | billed GB-s per million rows | peak RSS |")
        print("|---|---|---|---|")
        for r in refs:
            if "failed" in r:
                print(f"| {r['memory_mb']} MB | {r['failed'][:120]} | | |".replace("\n", " "))
            else:
                print(f"| {r['memory_mb']} MB | {r['total_s']:.1f} s | {r['gb_s_per_million_rows']:.1f} "
                      f"| {r['peak_rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
