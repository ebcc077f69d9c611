"""A long run of the real daemon at a steady push rate: memory, threads, file descriptors, CPU, counts.

    python -m bench.soak [--seconds 3600] [--rate 200] [--batch 1] [--sample-seconds 60] [--out soak.json]
                         [--agent-path CHECKOUT] [--idle-seconds 0]

One ``goodhart-agent run`` process with an ``http_push`` source on 127.0.0.1 gets ``--rate`` records
per second, in pushes of ``--batch`` records on one keep-alive connection, paced against the
monotonic clock (a late push is sent at once, never skipped). A fifth of the records carry an
audit, so detection runs on three segments the whole time. Every ``--sample-seconds`` the process's
resident memory, thread count, open file descriptors and CPU share (from /proc) are sampled beside
``goodhart_records_total``. At the end the counts are checked exactly: records sent = records the
202 answers accepted = ``goodhart_records_total`` = rows in the store (read beside the running
process), and the process is stopped with SIGTERM and its exit timed.

``--agent-path`` runs the agent of another checkout (its directory goes first on the agent's
``PYTHONPATH``), so that two versions can be measured in turn in the same session, on the same
machine. ``--idle-seconds`` measures the process's CPU share over that many seconds with no push
after the load (detection has state by then, so its steps have something to look at).

Flat means: the last third of the samples stays within a few MiB of the first sample after warm-up.
The figures are in docs/hardening.md (Soak) and docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from agent.store import DB_FILENAME
from bench.fleet import Proc, cpu_seconds, free_port, wait

PROXIES = [{"name": "thumbs_up", "field": "proxy.thumbs_up"},
           {"name": "words", "compute": {"kind": "length", "field": "output", "unit": "words"}}]
AUDITS = [{"name": "resolved", "field": "audit.resolved"}]
SEGMENTS = ("billing", "technical", "account")
TEXTS = ("Thanks for reaching out, I have reset the billing cycle and the duplicate charge is refunded.",
         "I cleared the stale session so login works again; let me know if it happens once more.",
         "Your account email is updated; the confirmation link is valid for a day.")


def record(i: int, now: float) -> dict[str, Any]:
    """One output; the proxy tracks the audit (a healthy system), a fifth audited."""
    good = (i * 7919) % 10 < 7
    r: dict[str, Any] = {"id": f"soak-{i:09d}", "ts": now, "output": TEXTS[i % 3],
                         "labels": {"segment": SEGMENTS[i % 3]},
                         "proxy": {"thumbs_up": int(good if i % 4 else not good)}}
    if i % 5 == 0:
        r["audit"] = {"resolved": int(good)}
    return r


def proc_status(pid: int) -> dict[str, float]:
    """Resident MiB, threads and open descriptors of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def stored_outputs(state_dir: Path) -> int:
    db = sqlite3.connect(f"file:{state_dir / DB_FILENAME}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM outputs").fetchone()[0])
    finally:
        db.close()


def idle_cpu(pid: int, seconds: float) -> float:
    """The process's CPU share (percent of a core) over ``seconds`` with nothing sent to it."""
    t0, cpu0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    return round(100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0), 3)


def run(seconds: float, rate: float, batch: int, sample_seconds: float, workdir: Path,
        agent_path: Path | None = None, idle_seconds: float = 0) -> dict[str, Any]:
    push = free_port()
    state = workdir / "state"
    config = {"source": {"type": "http_push", "listen": f"127.0.0.1:{push}"}, "state_dir": str(state),
              "proxies": PROXIES, "audits": AUDITS, "segments": {"field": "labels.segment"},
              "log": {"level": "WARNING"}}
    env = None if agent_path is None else {
        "PYTHONPATH": os.pathsep.join([str(agent_path.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])])}
    agent = Proc(config, workdir, "agent", env)
    pid = agent.proc.pid
    url = f"http://127.0.0.1:{push}/v1/records"
    samples: list[dict[str, Any]] = []
    sent = accepted = refused = 0
    started = time.monotonic()
    next_sample = started
    cpu_prev, t_prev = cpu_seconds(pid), started
    with requests.Session() as session:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) - sent  # records owed by now
            if due >= batch:
                now = time.time()
                body = "".join(json.dumps(record(sent + j, now)) + "\n" for j in range(batch)).encode()
                resp = session.post(url, data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=30)
                if resp.status_code == 202:
                    sent += batch
                    accepted += int(resp.json()["accepted"])
                else:
                    refused += 1  # retried by the next turn of the loop, as a client would
                    time.sleep(0.05)
                continue
            if time.monotonic() >= next_sample:
                t, cpu = time.monotonic(), cpu_seconds(pid)
                samples.append({"elapsed_s": round(t - started, 1), **proc_status(pid),
                                "cpu_percent": round(100 * (cpu - cpu_prev) / max(t - t_prev, 1e-9), 2),
                                "sent": sent, "records_total": agent.value("goodhart_records_total",
                                                                           source="http_push")})
                cpu_prev, t_prev = cpu, t
                next_sample += sample_seconds
                print(json.dumps(samples[-1]), flush=True)
            time.sleep(min(batch / rate, 0.05))
    wait(lambda: agent.value("goodhart_records_total", source="http_push") >= sent, 60, "the last records counted")
    counted = agent.value("goodhart_records_total", source="http_push")
    rows = stored_outputs(state)
    final = proc_status(pid)
    idle = idle_cpu(pid, idle_seconds) if idle_seconds > 0 else None
    t0 = time.monotonic()
    agent.stop()
    return {"seconds": seconds, "rate": rate, "batch": batch, "sent": sent, "accepted": accepted,
            "refused_pushes": refused, "records_total": counted, "stored": rows,
            "counts_exact": sent == accepted == counted == rows, "final": final,
            "sigterm_exit_seconds": round(time.monotonic() - t0, 2), "exit_code": agent.proc.returncode,
            "idle_cpu_percent": idle, "samples": samples, "cpu_percent_mean": round(
                sum(s["cpu_percent"] for s in samples[1:]) / max(len(samples) - 1, 1), 2)}


def summary(result: dict[str, Any]) -> str:
    s = result["samples"]
    after_warmup = s[1:] or s
    rss = [x["rss_mib"] for x in after_warmup]
    return "\n".join([
        f"{result['seconds']:.0f} s at {result['rate']:.0f} records/s in pushes of {result['batch']}: "
        f"{result['sent']:,} sent, {result['accepted']:,} accepted, {result['records_total']:,.0f} counted, "
        f"{result['stored']:,} stored (exact: {result['counts_exact']}); {result['refused_pushes']} pushes refused",
        f"RSS MiB: first {rss[0]:.1f}, min {min(rss):.1f}, max {max(rss):.1f}, last {rss[-1]:.1f}",
        f"threads: min {min(x['threads'] for x in s)}, max {max(x['threads'] for x in s)}; "
        f"fds: min {min(x['fds'] for x in s)}, max {max(x['fds'] for x in s)}",
        f"CPU: {result['cpu_percent_mean']:.2f}% of a core on average; SIGTERM exit in "
        f"{result['sigterm_exit_seconds']} s, code {result['exit_code']}"
        + ("" if result["idle_cpu_percent"] is None else f"; idle after: {result['idle_cpu_percent']:.3f}%")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--rate", type=float, default=200, help="records per second")
    parser.add_argument("--batch", type=int, default=1, help="records per push")
    parser.add_argument("--sample-seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, help="write the samples and the summary as JSON")
    parser.add_argument("--agent-path", type=Path, help="run the agent of this checkout (first on its PYTHONPATH)")
    parser.add_argument("--idle-seconds", type=float, default=0,
                        help="after the load, the CPU share over this many seconds without pushes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        result = run(args.seconds, args.rate, args.batch, args.sample_seconds, Path(tmp), args.agent_path,
                     args.idle_seconds)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(summary(result))
    return 0 if result["counts_exact"] and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
