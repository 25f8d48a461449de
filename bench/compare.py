#!/usr/bin/env python3
"""Runs the end-to-end comparison behind BENCHMARKS.md (called by bench/run.sh).

Same synthetic events, same machine, each process pinned to one core (taskset -c 0):
  * cdc-batcher replay (release build) vs bench/reference_lambda.py (pandas + pyarrow),
    RUNS times each, alternating (so a change in the shared machine's load hits both alike),
    medians of wall time, CPU time (user + system) and peak RSS (/usr/bin/time);
  * the output of both is read back with pyarrow: the rows each claims are there;
  * memory while holding 20 tables x ~3 MiB of row JSON (no flush until the end);
  * start-up time of the Lambda entry point until the handler is ready.
Prints a Markdown report.
"""
import base64
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

import pyarrow.dataset as ds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench")
BIN = os.path.join(ROOT, "target", "release", "cdc-batcher")
PY = sys.executable
RUNS = int(os.environ.get("RUNS", "5"))


def timed(cmd, env=None):
    """(stdout, wall seconds, peak RSS MiB, CPU seconds) of cmd on one core."""
    full = ["taskset", "-c", "0", "/usr/bin/time", "-f", "TIME %e %M %U %S"] + cmd
    p = subprocess.run(full, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    m = re.search(r"TIME ([\d.]+) (\d+) ([\d.]+) ([\d.]+)", p.stderr)
    return p.stdout, float(m.group(1)), int(m.group(2)) / 1024, float(m.group(3)) + float(m.group(4))


def rows_in(directory):
    files = glob.glob(f"{directory}/**/*.parquet", recursive=True)
    return ds.dataset(files, format="parquet").count_rows() if files else 0


def payload_bytes(events):
    total = 0
    for path in events:
        with open(path) as f:
            for r in json.load(f)["Records"]:
                total += len(base64.b64decode(r["kinesis"]["data"]))
    return total


def run_both(events, label, env=None):
    cmds = {"rust": [BIN, "replay", "--output"],
            "python": [PY, os.path.join(ROOT, "bench", "reference_lambda.py"), "--output"]}
    runs = {name: {"walls": [], "cpus": [], "rss": [], "summary": None} for name in cmds}
    for _ in range(RUNS):
        for name, cmd in cmds.items():
            out = os.path.join(OUT, f"out-{label}-{name}")
            shutil.rmtree(out, ignore_errors=True)
            stdout, wall, peak, cpu = timed(cmd + [out] + events, env)
            runs[name]["summary"] = json.loads(stdout.strip().splitlines()[-1])
            runs[name]["walls"].append(wall)
            runs[name]["cpus"].append(cpu)
            runs[name]["rss"].append(peak)
    res = {}
    for name, r in runs.items():
        out = os.path.join(OUT, f"out-{label}-{name}")
        summary = r["summary"]
        on_disk = rows_in(out)
        if on_disk != summary["rows"]:
            sys.exit(f"{name}: claims {summary['rows']} rows, {on_disk} are in {out}")
        res[name] = {"wall": statistics.median(r["walls"]), "walls": r["walls"],
                     "cpu": statistics.median(r["cpus"]), "cpus": r["cpus"],
                     "rss": statistics.median(r["rss"]), "rows": summary["rows"], "summary": summary}
    return res


def startup_ms():
    env = {**os.environ, "S3_BUCKET_NAME": "bench-bucket", "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9", "LOG_LEVEL": "info"}
    vals = []
    for _ in range(15):
        p = subprocess.run(["taskset", "-c", "0", BIN], capture_output=True, text=True, env=env)
        m = re.search(r'"startup_ms":([\d.]+)', p.stderr)
        if not m:
            sys.exit(f"no start-up line:\n{p.stderr[-2000:]}")
        vals.append(float(m.group(1)))
    return statistics.median(vals)


def main():
    events = sorted(glob.glob(os.path.join(OUT, "events", "shard*.json")))
    mem_events = sorted(glob.glob(os.path.join(OUT, "events-mem", "shard*.json")))
    json_bytes = payload_bytes(events)
    # The reference buffers across invocations and writes at its thresholds:
    # warm-lossy is the mode that does the same (window mode without window
    # fields would write every batch: about 4,000 files instead of about 60).
    e2e = run_both(events, "e2e", {"FLUSH_MODE": "warm-lossy"})
    # The deployed path: tumbling windows (spool each batch, write at the
    # window's end). Includes replay's re-wrapping of every event in window
    # fields, which the function does not do.
    out = os.path.join(OUT, "out-window-rust")
    windowed = []
    for _ in range(RUNS):
        shutil.rmtree(out, ignore_errors=True)
        stdout, wall, peak, cpu = timed([BIN, "replay", "--window", "240", "--output", out] + events,
                                        {"FLUSH_MODE": "window"})
        windowed.append((wall, cpu, peak))
    if rows_in(out) != json.loads(stdout.strip().splitlines()[-1])["rows"]:
        sys.exit("window path: rows on disk differ from the summary")
    win_wall = statistics.median(w for w, _, _ in windowed)
    win_rss = statistics.median(m for _, _, m in windowed)
    # Buffers held across invocations: warm-lossy, the mode that holds them
    # (window mode without window fields writes each batch).
    hold = {"FLUSH_MODE": "warm-lossy", "BATCH_SIZE_BYTES_THRESHOLD": str(1 << 30), "BATCH_MAX_RECORDS_THRESHOLD": "10000000",
            "BATCH_MAX_AGE_SECONDS": "86400", "MAX_BUFFERED_BYTES": str(8 << 30)}
    mem = run_both(mem_events, "mem", hold)
    held_mib = mem["rust"]["summary"]["peak_buffered_bytes"] / 2**20
    held_py_mib = mem["python"]["summary"]["peak_buffered_bytes"] / 2**20
    start = startup_ms()
    many = sorted(glob.glob(os.path.join(OUT, "events-1000", "shard*.json")))
    budget = 32 * 2**20
    out = os.path.join(OUT, "out-1000-rust")
    shutil.rmtree(out, ignore_errors=True)
    stdout, wall_1000, rss_1000, _ = timed([BIN, "replay", "--output", out] + many,
                                        {"FLUSH_MODE": "warm-lossy", "MAX_BUFFERED_BYTES": str(budget)})
    s1000 = json.loads(stdout.strip().splitlines()[-1])
    if rows_in(out) != s1000["rows"]:
        sys.exit("1000 tables: rows on disk differ from the summary")

    r, p = e2e["rust"], e2e["python"]
    paired = statistics.median(pw / rw for rw, pw in zip(r["walls"], p["walls"]))
    mb = json_bytes / 1e6
    lines = [
        f"Events: {len(events)} files, {r['rows']} rows, {mb:.1f} MB of DMS JSON; {RUNS} runs each, one core; cdc-batcher with `FLUSH_MODE=warm-lossy` (buffers across invocations, as the reference does) unless said otherwise.",
        "",
        "| measure | cdc-batcher (Rust) | Python reference (pandas + pyarrow) | ratio |",
        "|---|---|---|---|",
        f"| end to end, wall time (median) | {r['wall']:.2f} s | {p['wall']:.2f} s | {p['wall'] / r['wall']:.1f}x |",
        f"| end to end, CPU time (user + system, median) | {r['cpu']:.2f} s | {p['cpu']:.2f} s | {p['cpu'] / r['cpu']:.1f}x |",
        f"| throughput, MB/s of DMS JSON (wall) | {mb / r['wall']:.0f} | {mb / p['wall']:.1f} | |",
        f"| throughput, MB/s of DMS JSON per CPU-second | {mb / r['cpu']:.0f} | {mb / p['cpu']:.1f} | |",
        f"| deployed path (`FLUSH_MODE=window`, `replay --window 240`: spool every batch, one final invocation), wall (median) / MB/s / peak RSS | {win_wall:.2f} s / {mb / win_wall:.0f} / {win_rss:.0f} MiB | | {p['wall'] / win_wall:.1f}x |",
        f"| throughput, rows/s | {r['rows'] / r['wall']:,.0f} | {p['rows'] / p['wall']:,.0f} | {(r['rows'] / r['wall']) / (p['rows'] / p['wall']):.1f}x |",
        f"| ratio of each Python run to the Rust run just before it, wall time (median; least affected by the machine's load changing) | | | {paired:.1f}x |",
        f"| peak RSS, end to end | {r['rss']:.0f} MiB | {p['rss']:.0f} MiB | |",
        f"| peak RSS holding {held_mib:.0f} MiB of buffered rows (Rust's count: row JSON, metadata, ids) / {held_py_mib:.0f} MiB of row JSON (Python's own count) | {mem['rust']['rss']:.0f} MiB ({mem['rust']['rss'] / held_mib:.2f}x held) | {mem['python']['rss']:.0f} MiB ({mem['python']['rss'] / held_mib:.2f}x the Rust figure) | |",
        f"| start-up until the handler is ready (median of 15) | {start:.1f} ms | | |",
        f"| 1000 tables, {s1000['rows']} rows, MAX_BUFFERED_BYTES 32 MiB: peak buffered / peak RSS / wall | {s1000['peak_buffered_bytes'] / 2**20:.1f} MiB / {rss_1000:.0f} MiB / {wall_1000:.2f} s | | |",
        f"| final flush of {mem['rust']['summary']['final_flush_bytes'] / 2**20:.0f} MiB of buffered rows (20 tables) to a local directory | {mem['rust']['summary']['final_flush_seconds'] * 1000:.0f} ms ({mem['rust']['summary']['final_flush_bytes'] / 2**20 / mem['rust']['summary']['final_flush_seconds']:.0f} MiB/s) | | |",
        "",
        "Lambda cost implied (one full core = 1769 MB of Lambda memory; below that a function gets",
        "memory/1769 of a core, so duration grows as memory shrinks and GB-seconds stay the same):",
        "",
        "| memory setting | cdc-batcher: s per 1M rows / GB-s per 1M rows | Python: s per 1M rows / GB-s per 1M rows |",
        "|---|---|---|",
    ] + [
        f"| {m} MB | {r['wall'] / r['rows'] * 1e6 * 1769 / m:.0f} s / {r['wall'] / r['rows'] * 1e6 * 1769 / 1024:.1f} GB-s "
        f"| {p['wall'] / p['rows'] * 1e6 * 1769 / m:.0f} s / {p['wall'] / p['rows'] * 1e6 * 1769 / 1024:.1f} GB-s |"
        for m in (128, 512)
    ] + [
        "",
        f"Wall times, Rust: {', '.join(f'{w:.2f}' for w in r['walls'])}; "
        f"Python: {', '.join(f'{w:.2f}' for w in p['walls'])}",
        f"CPU times, Rust: {', '.join(f'{w:.2f}' for w in r['cpus'])}; "
        f"Python: {', '.join(f'{w:.2f}' for w in p['cpus'])}",
        f"Rows read back with pyarrow: Rust {r['rows']}, Python {p['rows']} (each equals what the run claims).",
    ]
    report = "\n".join(lines)
    print(report)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(report + "\n")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"e2e": e2e, "mem": mem, "startup_ms": start, "json_bytes": json_bytes}, f, indent=1)


if __name__ == "__main__":
    main()
