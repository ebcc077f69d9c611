"""The attacks of docs/hardening.md, one function each, in table order (run by ``scripts/attacks.py``).

Each returns the figure it measured and whether the defence held against the expectation written
in its ``defence``. The *before* text is the issue's measurement on the agent before the fixes,
kept as history; it is not re-measured.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from attack_lab import (
    T0,
    Agent,
    Lab,
    Samples,
    agent_env,
    delta,
    raw,
    read_all,
    record,
    replay,
    seconds_until_closed,
    status_of,
    support_bot_stream,
    wait_until,
)

from agent.http.server import HttpServer, Request, Response
from agent.store import DB_FILENAME


@dataclass(frozen=True)
class Result:
    figure: str
    held: bool


@dataclass(frozen=True)
class Attack:
    id: str
    attack: str
    before: str
    defence: str
    test: str
    run: Callable[[Lab], Result]


ATTACKS: list[Attack] = []


def attack(id: str, attack: str, before: str, defence: str, test: str) -> Callable[[Callable[[Lab], Result]],
                                                                                    Callable[[Lab], Result]]:
    """Registers an attack; the table lists them in the order they are registered."""
    def register(run: Callable[[Lab], Result]) -> Callable[[Lab], Result]:
        ATTACKS.append(Attack(id, attack, before, defence, test, run))
        return run
    return register


HTTP_TESTS = "`tests/test_hardening_http.py`"
LIMITS = {"header_timeout_seconds": 3, "body_timeout_seconds": 3, "idle_timeout_seconds": 3}
NDJSON = {"Content-Type": "application/x-ndjson"}
POISON = {  # each once stopped a whole stream: the batch failed on every retry, valid records included
    b'{"id": "b\\ud800", "proxy": {"thumbs_up": 1}}': "bad_id",  # a lone surrogate: JSON yes, UTF-8 no
    b'{"id": "s", "labels": {"segment": "x\\udc00"}, "proxy": {"thumbs_up": 1}}': "bad_segment",
    b'{"id": "big", "proxy": {"thumbs_up": 1' + b"0" * 400 + b"}}": "bad_metric",  # 10**400: no float
    b'{"id": "long", "proxy": {"thumbs_up": ' + b"1" * 5000 + b"}}": "not_json",  # over 4,300 digits
}


def push_agent(lab: Lab) -> Agent:
    """The agent most attacks share: pushes on its main listener, short deadlines, DEBUG logs."""
    config = lab.config("push", source={"type": "http_push", "listen": "shared"}, limits=LIMITS,
                        log={"level": "DEBUG", "format": "json"})
    return lab.agent("push", config)


def shared(lab: Lab) -> Agent:
    return lab.shared("push", push_agent)


def stored(state_dir: Path, like: str) -> int:
    """Outputs in the store whose id matches the SQL pattern ``like`` (read-only; the agent may run)."""
    db = sqlite3.connect(f"file:{state_dir / DB_FILENAME}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT COUNT(*) FROM outputs WHERE id LIKE ?", (like,)).fetchone()[0])
    finally:
        db.close()


def state_dir(agent: Agent) -> Path:
    return agent.config.parent / "state"


def reasons(before: Samples, after: Samples) -> dict[str, int]:
    found = {}
    for reason in set(POISON.values()):
        found[reason] = int(delta(before, after, "goodhart_records_rejected_total", reason=reason))
    return found


def valid(prefix: str, i: int) -> bytes:
    return json.dumps({"id": f"{prefix}{i}", "ts": int(T0) + i, "proxy": {"thumbs_up": 1}}).encode()


# -- 1, 2: poison records ---------------------------------------------------------------------------------------
def poison_batch(prefix: str) -> list[bytes]:
    return [valid(prefix, 0), valid(prefix, 1), valid(prefix, 2), *POISON, valid(prefix, 3), valid(prefix, 4),
            valid(prefix, 5)]


def poison_jsonl(lab: Lab) -> str:
    path = lab.dir("poison-jsonl") / "records.jsonl"
    path.write_bytes(b"\n".join(poison_batch("j")) + b"\n")
    agent = lab.agent("poison-jsonl", lab.config("poison-jsonl", source={"type": "jsonl", "path": str(path)}))
    before: Samples = {}
    agent.start()
    agent.wait_value("goodhart_records_total", 10, source="jsonl")
    with path.open("ab") as f:  # the stream goes on after the poison
        f.write(b"\n".join(valid("j", i) for i in range(6, 9)) + b"\n")
    agent.wait_value("goodhart_records_total", 13, source="jsonl")
    found = reasons(before, agent.metrics())
    agent.terminate()
    return f"JSONL: {stored(state_dir(agent), 'j%')} of 9 valid stored, rejected {_reasons(found)}"


def poison_pull(lab: Lab) -> str:
    lines: list[tuple[float, bytes]] = []  # (position, line): the upstream serves lines after ?since=

    def page(request: Request) -> Response:
        since = dict(p.partition("=")[::2] for p in request.query.split("&") if p).get("since")
        after = float(since) if since else float("-inf")
        body = b"".join(line + b"\n" for pos, line in lines if pos > after)
        return Response(200, body, "application/x-ndjson")

    batch = poison_batch("p")
    position = T0
    for line in batch:
        position = float(json.loads(line)["ts"]) if line.startswith(b'{"id": "p') else position + 0.01
        lines.append((position, line))
    upstream = HttpServer("127.0.0.1", 0)
    upstream.route("GET", "/records", page)
    upstream.start(poll_interval=0.05)
    try:
        source = {"type": "http_pull", "url": f"http://127.0.0.1:{upstream.port}/records", "cursor_param": "since",
                  "poll_seconds": 0.2}
        agent = lab.agent("poison-pull", lab.config("poison-pull", source=source)).start()
        agent.wait_value("goodhart_records_total", 10, source="http_pull")
        lines.extend((T0 + i, valid("p", i)) for i in range(6, 9))
        agent.wait_value("goodhart_records_total", 13, source="http_pull")
        found = reasons({}, agent.metrics())
        agent.terminate()
    finally:
        upstream.stop()
    return f"pull: {stored(state_dir(agent), 'p%')} of 9 valid stored, rejected {_reasons(found)}"


def _reasons(found: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(found.items()))


@attack("1", "one record with a lone surrogate, `10**400` or a 4,300-digit integer in a JSONL or pull batch",
        "the whole batch failed on every tick, also after restarts",
        "rejected alone (`bad_id`, `bad_segment`, `bad_metric`, `not_json`), the stream goes on",
        "`tests/test_records.py`, `tests/test_pipeline.py`, `tests/test_http_pull.py`")
def attack_poison_in_a_stream(lab: Lab) -> Result:
    figures = [poison_jsonl(lab), poison_pull(lab)]
    expected = _reasons(dict.fromkeys(POISON.values(), 1))
    held = all(f.split(": ", 1)[1] == f"9 of 9 valid stored, rejected {expected}" for f in figures)
    return Result("; ".join(figures), held)


@attack("2", "the same records in a push", "503 or 500 for the whole push, valid records included",
        "202; only the poison is rejected, counted by reason (as one JSON document a 4,300-digit integer makes the "
        "body unparseable: 400, never retried)", "`tests/test_http_push.py`")
def attack_poison_in_a_push(lab: Lab) -> Result:
    agent = shared(lab)
    before = agent.metrics()
    resp = agent.post("/v1/records", data=b"\n".join(poison_batch("push-")) + b"\n", headers=NDJSON)
    found = reasons(before, agent.metrics())
    body = resp.json() if resp.status_code == 202 else {}
    # As one JSON document the 5,000 digits make the whole body unparseable: a 4xx, never retried.
    array = agent.post("/v1/records", data=b"[" + b",".join(poison_batch("array-")) + b"]",
                       headers={"Content-Type": "application/json"}).status_code
    figure = (f"NDJSON: {resp.status_code}, accepted {body.get('accepted')} of 6 valid, rejected {_reasons(found)}; "
              f"stored {stored(state_dir(agent), 'push-%')}; the same as one JSON array: {array}")
    held = (resp.status_code == 202 and body.get("accepted") == 6 and found == dict.fromkeys(POISON.values(), 1)
            and array == 400)
    return Result(figure, held)


# -- 3: slow bodies ---------------------------------------------------------------------------------------------
def slow_push(port: int) -> socket.socket:
    """A push whose headers announce 100 bytes of which one ever arrives."""
    return raw(port, b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n[")


def sigterm_with_slow_clients(lab: Lab) -> tuple[int, float]:
    port = lab.agent("sigterm", lab.config("sigterm")).port  # a free port for the push listener
    config = lab.config("sigterm", source={"type": "http_push", "listen": f"127.0.0.1:{port}"},
                        limits={**LIMITS, "body_timeout_seconds": 600})
    agent = lab.agent("sigterm", config).start()
    with ExitStack() as stack:
        for _ in range(6):
            stack.enter_context(slow_push(port))
        wait_until(lambda: agent.value("goodhart_http_connections_open", listener="http_push") >= 6)
        return agent.terminate(timeout=60)


@attack("3", "4 sockets send push headers and one body byte",
        "every push 429 (the slot was taken before the body was read); SIGTERM took 10.6 s",
        "a slot is taken only once the body has arrived whole; the slow clients are dropped at "
        "`limits.body_timeout_seconds` (`goodhart_http_connections_dropped_total{reason=\"timeout\"}`); a normal "
        "push gets 202; SIGTERM does not wait for them",
        "`test_slow_bodies_hold_no_push_slot_and_are_dropped_at_the_body_deadline`, "
        "`test_sigterm_with_slow_clients_connected_exits_without_waiting_for_them` (slow) in " + HTTP_TESTS)
def attack_slow_bodies(lab: Lab) -> Result:
    agent = shared(lab)
    before = agent.metrics()
    with ExitStack() as stack:
        slow = [stack.enter_context(slow_push(agent.port)) for _ in range(6)]  # max_in_flight is 4
        wait_until(lambda: agent.value("goodhart_http_connections_open", listener="main") >= 7)
        status = agent.post("/v1/records", json=[record("slow-fast", T0)]).status_code
        closed = [seconds_until_closed(sock, 20) for sock in slow]
    after = agent.metrics()
    dropped = delta(before, after, "goodhart_http_connections_dropped_total", listener="main", reason="timeout")
    busy = delta(before, after, "goodhart_source_errors_total", reason="busy")
    code, took = sigterm_with_slow_clients(lab)
    deadline = LIMITS["body_timeout_seconds"]
    slowest = max((c for c in closed if c is not None), default=0.0)
    figure = (f"6 slow pushes: a normal push {status}; the 6 closed after {slowest:.1f} s (deadline {deadline} s), "
              f"dropped for timeout {dropped:g}, refused busy {busy:g}; SIGTERM with 6 connected: exit {code} in "
              f"{took:.1f} s")
    held = (status == 202 and None not in closed and slowest <= deadline + 3 and dropped == 6 and busy == 0
            and code == 0 and took < 5)
    return Result(figure, held)


# -- 4: absurd values -------------------------------------------------------------------------------------------
def poison_stream(stream: Path, after: int, proxy: str, value: float) -> None:
    """Set ``proxy`` of the first audited output at or after output ``after`` to ``value``."""
    lines = [json.loads(line) for line in stream.read_text().splitlines()]
    labelled = {obj["id"] for obj in lines if "audit" in obj}
    target = next(obj for obj in [o for o in lines if "proxy" in o][after:] if obj["id"] in labelled)
    target["proxy"][proxy] = value
    stream.write_text("".join(json.dumps(obj) + "\n" for obj in lines))


def star_alarms(events: list[dict[str, Any]], proxy: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["state"] == "alarm" and e["segment"] == "*" and proxy in (None, e["proxy"])]


@attack("4a", "one audited proxy of 1e300 in a stable stream", "a false alarm (issue's measurement)",
        "kept out of the detectors and counted (`goodhart_implausible_values_total{kind=\"proxy\"}`); no alarm",
        "`tests/test_hardening_values.py` (replay + daemon)")
def attack_huge_proxy(lab: Lab) -> Result:
    stream = support_bot_stream(lab.dir("4a") / "stable.jsonl", 3000, seed=5)
    poison_stream(stream, 1500, "resolution_seconds", 1e300)
    bounded = [e for e in replay(lab, "4a", stream)[0] if e["state"] == "alarm"]
    unbounded = [e for e in replay(lab, "4a-off", stream, detection={"implausible_spread_multiple": 0})[0]
                 if e["state"] == "alarm"]
    agent = shared(lab)
    before = agent.metrics()
    normal = [record(f"huge-{i}", T0 + i, thumbs=i % 2, seconds=60.0 + i % 7, resolved=i % 2) for i in range(40)]
    resp = agent.post("/v1/records", json=[*normal, record("huge-absurd", T0 + 41, seconds=1e300, resolved=1)])
    labels = {"kind": "proxy", "metric": "resolution_seconds"}
    wait_until(lambda: agent.value("goodhart_implausible_values_total", **labels)
               > before.get(("goodhart_implausible_values_total", tuple(sorted(labels.items()))), 0), timeout=10)
    kept_out = delta(before, agent.metrics(), "goodhart_implausible_values_total", **labels)
    figure = (f"replay of 3,000 outputs with 1e300 at #1,500: {len(bounded)} alarms (with the bounds off: "
              f"{len(unbounded)}); daemon: push {resp.status_code}, accepted {resp.json().get('accepted')} of 41, "
              f"kept out of the detectors {kept_out:g}")
    return Result(figure, not bounded and resp.status_code == 202 and kept_out == 1)


@attack("4b", "one `-1e308` in the reference period", "the statistic pinned at 0, a real change missed "
        "(issue's measurement)", "kept out; the later change alarms", "`tests/test_hardening_values.py`")
def attack_huge_negative_reference(lab: Lab) -> Result:
    stream = support_bot_stream(lab.dir("4b") / "change.jsonl", 6000, seed=3, change_at=3500)
    poison_stream(stream, 100, "resolution_seconds", -1e308)
    found = star_alarms(replay(lab, "4b", stream)[0], "resolution_seconds")
    first = min((e["ts"] - T0 for e in found), default=None)
    figure = (f"replay of 6,000 outputs, -1e308 at #100, change at #3,500: {len(found)} `*` alarm(s) of "
              f"resolution_seconds" + (f", the first at #{first:,.0f}" if first is not None else ""))
    return Result(figure, bool(found) and all(e["ts"] > T0 + 3500 for e in found))


@attack("4c", "one `ts: 1e300` (or 2100, or 1970)", "accepted; every `*` statistic NaN in replay",
        "rejected as `bad_timestamp`: before 2000-01-01 or more than `limits.max_future_seconds` (1 day) ahead of "
        "the wall clock", "`tests/test_hardening_values.py`")
def attack_absurd_timestamps(lab: Lab) -> Result:
    stream = support_bot_stream(lab.dir("4c") / "short.jsonl", 50, seed=1)
    with stream.open("a") as f:
        for i, ts in enumerate((1e300, 4_102_444_800, 86_400)):  # 1e300, 2100-01-01, 1970-01-02
            f.write(json.dumps({"id": f"bad-{i}", "ts": ts, "proxy": {"thumbs_up": 1}}) + "\n")
    summary = replay(lab, "4c", stream)[1].strip().splitlines()[-1]
    rejected = summary.partition("(")[2].partition(" rejected")[0]
    agent = shared(lab)
    answers = [agent.post("/v1/records", json=[{**record(f"ts-{ts}", T0), "ts": ts}]).json().get("reasons")
               for ts in (1e300, 4_102_444_800, 86_400)]
    figure = f"replay: {rejected} of 3 rejected; push: {answers}"
    return Result(figure, rejected == "3" and all(a == {"bad_timestamp": 1} for a in answers))


# -- 5: header blocks and idle connections ----------------------------------------------------------------------
@contextmanager
def sampling(agent: Agent) -> Iterator[dict[str, int]]:
    """The peak RSS (KiB) and thread count of the agent while the block runs, sampled every 20 ms."""
    peak = dict(agent.status())
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                now = agent.status()
            except OSError:
                return
            for key, value in now.items():
                peak[key] = max(peak[key], value)
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def huge_header_block(port: int, total: int = 6 * 2**20) -> int:
    """Sends up to ``total`` bytes of one header line; the status of the answer (0: closed without one)."""
    try:
        sock = raw(port, b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: ")
    except OSError:
        return -1
    with sock:
        try:
            chunk = b"a" * 65536
            for _ in range(total // len(chunk)):
                sock.sendall(chunk)
        except OSError:
            pass
        sock.settimeout(10)
        return status_of(read_all(sock))


def trickle_header(port: int, limit: float = 15.0) -> float | None:
    """A client that sends its headers one byte every 0.2 s: the seconds until the server closes it."""
    with raw(port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n") as sock:
        start = time.monotonic()
        while time.monotonic() - start < limit:
            try:
                sock.sendall(b"a")
            except OSError:
                return time.monotonic() - start
            if _readable(sock, 0.2):
                return time.monotonic() - start
    return None


def _readable(sock: socket.socket, wait: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(wait * 1000))


@attack("5a", "90 connections with unfinished 6 MB header blocks", "RSS 68 → 566 MiB, 381 MiB held after",
        "request line plus headers capped at `limits.max_header_bytes` (16 KiB; 431, or 414 for the request line "
        "alone), and all of them due within `limits.header_timeout_seconds` (each socket read armed with the time "
        "left, so a byte-at-a-time client gains nothing)",
        "`test_a_header_block_over_the_budget_is_431_and_closed`, `test_headers_that_never_end_are_dropped_...`")
def attack_header_blocks(lab: Lab) -> Result:
    agent = shared(lab)
    rss_before = agent.status()["VmRSS"]
    with sampling(agent) as peak:
        threads = [threading.Thread(target=lambda: answers.append(huge_header_block(agent.port))) for _ in range(90)]
        answers: list[int] = []
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    time.sleep(1)
    rss_after = agent.status()["VmRSS"]
    trickled = trickle_header(agent.port)
    statuses = ", ".join(f"{n}× {s or 'closed unanswered'}" for s, n in sorted(Counter(answers).items()))
    mib = [round(v / 1024) for v in (rss_before, peak["VmRSS"], rss_after)]
    figure = (f"RSS {mib[0]} → peak {mib[1]} → {mib[2]} MiB after; answers {statuses}; a byte-every-0.2 s header "
              "closed after " + (f"{trickled:.1f} s" if trickled is not None else "never"))
    deadline = LIMITS["header_timeout_seconds"]
    held = (mib[1] - mib[0] <= 64 and mib[2] - mib[0] <= 32 and len(answers) == 90 and -1 not in answers
            and trickled is not None and trickled <= deadline + 2)
    return Result(figure, held)


def open_idle(port: int, n: int, pace: float = 0.002) -> list[socket.socket]:
    """``n`` connections opened one every ``pace`` seconds: fast, yet slow enough for each to reach the
    server (a burst beyond the kernel's accept backlog would leave most in the kernel, never seen)."""
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        except OSError:
            break
        time.sleep(pace)
    return socks


def answered_at_once(socks: list[socket.socket], expected: int, wait: float) -> Counter[int]:
    """Statuses of the connections the server answered (or closed: 0), until ``expected`` have been
    answered or ``wait`` seconds have passed."""
    found: Counter[int] = Counter()
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ, sock)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and sum(found.values()) < expected:
        for key, _ in sel.select(0.2):
            ready: socket.socket = key.data
            sel.unregister(ready)
            ready.settimeout(1)
            found[status_of(read_all(ready))] += 1
    sel.close()
    return found


def keep_alive_closed_after(agent: Agent) -> float | None:
    with raw(agent.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") as sock:
        sock.settimeout(5)
        sock.recv(65536)  # the answer; the connection stays open, idle
        return seconds_until_closed(sock, 20)


@attack("5b", "idle connections up to the fd limit; 1,000 idle connections",
        "a core pinned, `/healthz` silent; 1,008 threads",
        "at most `limits.max_connections` (64) per listener; the next gets a 503 at accept and is closed, without a "
        "thread; an idle keep-alive connection is closed after `limits.idle_timeout_seconds`",
        "`test_connections_beyond_the_limit_get_503_at_once_...`")
def attack_idle_connections(lab: Lab) -> Result:
    # Its own agent, whose admitted idle connections outlive the flood (header deadline 30 s).
    config = lab.config("idle", source={"type": "http_push", "listen": "shared"},
                        limits={**LIMITS, "header_timeout_seconds": 30})
    agent = lab.agent("idle", config).start()
    before, base = agent.metrics(), agent.status()["Threads"]
    with sampling(agent) as peak:
        flood = time.monotonic()
        socks = open_idle(agent.port, 1000)
        try:
            answers = answered_at_once(socks, len(socks) - 64, 10)
            answered_in = time.monotonic() - flood
            start = time.monotonic()
            try:
                healthz = str(requests.get(agent.url + "/healthz", timeout=5).status_code)
            except OSError as err:
                healthz = type(err).__name__
            during = time.monotonic() - start
        finally:
            for sock in socks:
                sock.close()
    after = wait_until(lambda: requests.get(agent.url + "/healthz", timeout=5).status_code == 200, timeout=20)
    over = delta(before, agent.metrics(), "goodhart_http_connections_dropped_total", listener="main",
                 reason="over_limit")
    idle = keep_alive_closed_after(agent)
    figure = (f"{len(socks):,} idle opened in {answered_in:.1f} s: {answers.get(503, 0)} answered 503 at accept "
              f"(`over_limit` {over:g}); threads {base} → peak {peak['Threads']}; `/healthz` during: {healthz} in "
              f"{during * 1000:.0f} ms, after: {'200' if after else 'not 200'}; an idle keep-alive closed after "
              + (f"{idle:.1f} s" if idle is not None else "never"))
    held = (len(socks) == 1000 and answers.get(503, 0) >= 1000 - 64 - 4 and over >= answers.get(503, 0)
            and peak["Threads"] - base <= 64 + 4 and during < 2 and bool(after) and idle is not None
            and idle <= LIMITS["idle_timeout_seconds"] + 2)
    return Result(figure, held)


# -- 6: request smuggling ---------------------------------------------------------------------------------------
@attack("6", "a POST without Content-Length whose body is a complete second POST; duplicate or invalid "
        "Content-Length", "400, then 202 for the smuggled record",
        "411 (no length, or any Transfer-Encoding) or 400 (two lengths, `+2`, `2 2`), and the connection is closed: "
        "no byte of an unframed body is ever read as a request",
        "`test_an_unframed_post_is_411_and_the_request_smuggled_in_its_body_is_never_processed`")
def attack_smuggling(lab: Lab) -> Result:
    agent = shared(lab)
    before = agent.metrics()
    smuggled = b'[{"id": "smuggled", "ts": 1790000000, "proxy": {"thumbs_up": 1}}]'
    inner = (b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
    head = b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    framings = (b"", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 2\r\nContent-Length: 40\r\n",
                b"Content-Length: +2\r\n", b"Content-Length: 2 2\r\n")
    answers = []
    for framing in framings:
        body = (b"[]" if framing.startswith(b"Content") else b"") + inner
        with raw(agent.port, head + framing + b"\r\n" + body) as s:
            s.settimeout(20)
            answer = read_all(s)
        answers.append((status_of(answer), answer.count(b"HTTP/1.1 ")))
    after = agent.metrics()
    smuggled_stored = stored(state_dir(agent), "smuggled")
    statuses = [s for s, _ in answers]
    counted = {status: int(delta(before, after, "goodhart_http_errors_total", listener="main", status=status))
               for status in ("400", "411")}
    figure = (f"answers {', '.join(map(str, statuses))}, one per connection: "
              f"{'yes' if all(n == 1 for _, n in answers) else 'no'}; smuggled record stored: {smuggled_stored}; "
              f"counted 411: {counted['411']}, 400: {counted['400']}")
    held = (statuses == [411, 411, 400, 400, 400] and all(n == 1 for _, n in answers) and smuggled_stored == 0
            and counted == {"411": 2, "400": 3})
    return Result(figure, held)


# -- 7: the store -----------------------------------------------------------------------------------------------
@attack("7a", "the store refuses writes (another writer holds it; a read-only file or mount; a full disk)",
        "`/readyz` 200 while every push got 503",
        "a write probe every 5 s, on its own connection with a 1 s busy timeout, into a one-row table; `/readyz` 503 "
        "`store not writable: <why>` until it succeeds again", "`tests/test_hardening_store.py`")
def attack_store_locked(lab: Lab) -> Result:
    agent = shared(lab)
    holder = sqlite3.connect(state_dir(agent) / DB_FILENAME, isolation_level=None, timeout=1)
    start = time.monotonic()
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the store: no write of the agent can land
    try:
        seen = wait_until(lambda: (r := agent.readyz())[0] == 503 and r, timeout=30, interval=0.2)
        noticed = time.monotonic() - start
        pushed = time.monotonic()
        try:
            push = str(agent.post("/v1/records", json=[record("locked", T0)], timeout=10).status_code)
        except requests.Timeout:
            push = "no answer"
        push_took = time.monotonic() - pushed
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    released = time.monotonic()
    ready = wait_until(lambda: agent.readyz()[0] == 200, timeout=30, interval=0.2)
    back = time.monotonic() - released
    push_after = agent.post("/v1/records", json=[record("unlocked", T0)]).status_code
    text = seen[1] if seen else "never 503"
    figure = (f"another writer holds the store: `/readyz` 503 `{text}` after {noticed:.1f} s, a push: {push} "
              f"within {push_took:.0f} s (it waits on the store's 30 s busy timeout); "
              f"released: `/readyz` 200 after {back:.1f} s, a push {push_after}")
    held = bool(seen) and "store not writable" in text and bool(ready) and push_after == 202
    return Result(figure, held)


def corrupt_an_index(db_path: Path) -> None:
    """Overwrite an index's root page past its header with garbage: the file still opens."""
    conn = sqlite3.connect(db_path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outputs' "
                        "AND rootpage > 1 ORDER BY rootpage LIMIT 1").fetchone()[0]
    conn.close()
    with open(db_path, "r+b") as f:
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff" * (page_size - 16))


@attack("7b", "a corrupt index page", "started; ready",
        "`PRAGMA quick_check` at start: `state_dir: the store <file> is corrupt: <first finding>`, one line, exit 2",
        "`tests/test_hardening_store.py`")
def attack_corrupt_store(lab: Lab) -> Result:
    config = lab.config("corrupt", source={"type": "http_push", "listen": "shared"})
    agent = lab.agent("corrupt", config).start()
    status = agent.post("/v1/records", json=[record(f"o{i}", T0 + i) for i in range(300)]).status_code
    agent.terminate()
    db_path = state_dir(agent) / DB_FILENAME
    corrupt_an_index(db_path)
    again = lab.agent("corrupt", config)
    run = subprocess.run(again.command(), capture_output=True, text=True, timeout=60, env=agent_env())
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    shown = (lines[0] if lines else "").replace(str(db_path), "<file>")
    figure = f"300 records pushed ({status}), an index page overwritten: exit {run.returncode}, {len(lines)} line: " \
             f"`{shown[:90]}…`"
    held = run.returncode in (1, 2) and len(lines) == 1 and str(db_path) in lines[0] and "corrupt" in lines[0]
    return Result(figure, held)


# -- 8: who may write -------------------------------------------------------------------------------------------
@attack("8a", "`source.listen: shared` on a 0.0.0.0 main listener, no token",
        "accepted pushes from anywhere, no warning",
        "refused at start (`source.listen: ... set source.token_env or source.token_file, or "
        "source.allow_unauthenticated: true`); with the opt-in, a warning at start",
        "`tests/test_hardening_auth.py`")
def attack_open_listener(lab: Lab) -> Result:
    agent = lab.agent("open", lab.config("open", source={"type": "http_push", "listen": "shared"}), listen="0.0.0.0")
    start = time.monotonic()
    run = subprocess.run(agent.command(), capture_output=True, text=True, timeout=60,  # nothing connects
                         env=agent_env())
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    figure = (f"exit {run.returncode} after {time.monotonic() - start:.1f} s, {len(lines)} line: "
              f"`{(lines[0] if lines else '')[:100]}...`")
    held = run.returncode != 0 and len(lines) == 1 and lines[0].startswith("source.listen: ") \
        and "source.allow_unauthenticated" in lines[0]
    return Result(figure, held)


@attack("8b", "`/v1/rebaseline` with a `text/plain` or form body (what a browser sends cross-site without a "
        "preflight)", "200", "415", "`tests/test_hardening_auth.py`")
def attack_rebaseline_text(lab: Lab) -> Result:
    agent = shared(lab)
    statuses = []
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        statuses.append(agent.post("/v1/rebaseline", data=b"{}", headers=headers).status_code)
    figure = f"text/plain, form, no type: {', '.join(map(str, statuses))}"
    return Result(figure, statuses == [415, 415, 415])


# -- 9: JSONL files ---------------------------------------------------------------------------------------------
@attack("9a", "a JSONL file rewritten in place with the same first 128 bytes, longer than the old offset",
        "199 of 400 new lines lost silently",
        "the position also holds a fingerprint of the 128 bytes before the offset; a change restarts at the top "
        "(earlier records: `duplicate`); copytruncate's inherent loss documented in docs/sources.md",
        "`test_a_file_rewritten_in_place_with_the_same_first_bytes_is_read_again_from_the_top` (400 → 600 records; "
        "fails on the old code with 400)")
def attack_rewrite_in_place(lab: Lab) -> Result:
    path = lab.dir("rewrite") / "records.jsonl"
    path.write_text("".join(json.dumps(record(f"a{i}", T0 + i)) + "\n" for i in range(200)))
    agent = lab.agent("rewrite", lab.config("rewrite", source={"type": "jsonl", "path": str(path)})).start()
    first = agent.wait_value("goodhart_records_total", 200, source="jsonl")
    new = [record("a0", T0), *(record(f"b{i}", T0 + i) for i in range(1, 400))]
    with path.open("r+b") as f:  # the same inode, never shorter: the same first line, then 399 new records
        f.write("".join(json.dumps(r) + "\n" for r in new).encode())
    wait_until(lambda: agent.value("goodhart_records_total", source="jsonl") >= 600, timeout=20, interval=0.2)
    time.sleep(1)  # nothing more should come
    total = agent.value("goodhart_records_total", source="jsonl")
    agent.terminate()
    new_stored = stored(state_dir(agent), "b%")
    figure = f"200 read; rewritten in place with 400 lines: {total:g} read in all, {new_stored} of 399 new stored"
    return Result(figure, first == 200 and total == 600 and new_stored == 399)


@attack("9b", "a FIFO at a JSONL source's path", "ingest hung in `open()`, and SIGTERM with it",
        "opened non-blocking and refused unless a regular file: "
        "`goodhart_source_errors_total{reason=\"not_regular_file\"}`, one ERROR line, "
        "`goodhart_up{component=\"source\"}` 0; SIGTERM exits 0", "`tests/test_hardening_jsonl.py`")
def attack_fifo(lab: Lab) -> Result:
    fifo = lab.dir("fifo") / "records.jsonl"
    os.mkfifo(fifo)
    agent = lab.agent("fifo", lab.config("fifo", source={"type": "jsonl", "path": str(fifo)})).start()
    errors = agent.wait_value("goodhart_source_errors_total", 1, reason="not_regular_file")
    up = agent.value("goodhart_up", component="source")
    code, took = agent.terminate()
    lines = agent.log().count("not a regular file")
    figure = f"not_regular_file {errors:g}, source up {up:g}, {lines} log line; SIGTERM: exit {code} in {took:.1f} s"
    return Result(figure, errors >= 1 and up == 0 and lines == 1 and code == 0 and took < 10)


# -- 10: logs, the WAL, error answers ---------------------------------------------------------------------------
SECRET = "hunter2-not-a-real-key-0123456789"


@attack("10a", "DEBUG logs of a pull whose URL carries `?api_key=`; a judge's error echoing a key prefix",
        "the HTTP client's DEBUG line quoted the query string",
        "every formatted log line is redacted last (`agent/logs.py`): URL and request-line query strings, "
        "`api_key=`/`token=`/`secret=`/`password=` values, bearer tokens, `sk-`-style keys become `<redacted>`",
        "`tests/test_hardening_logs.py`, doctests of `agent.logs.redact`")
def attack_key_in_logs(lab: Lab) -> Result:
    upstream = HttpServer("127.0.0.1", 0)
    upstream.route("GET", "/v1/records", lambda _: Response.text(f"down; you sent api_key={SECRET}\n", 500))
    upstream.start(poll_interval=0.05)
    url = f"http://127.0.0.1:{upstream.port}/v1/records?api_key={SECRET}&page_size=10"
    source = {"type": "http_pull", "url": url, "poll_seconds": 0.2, "backoff_initial_seconds": 0.2}
    try:
        agent = lab.agent("logs", lab.config("logs", source=source, log={"level": "DEBUG", "format": "json"}))
        agent.start()
        seen = wait_until(lambda: '/v1/records?<redacted> HTTP/1.1\\" 500' in agent.log(), timeout=20)
        agent.terminate()
    finally:
        upstream.stop()
    log = agent.log()
    pulls = log.count("/v1/records?")
    leaks = log.count(SECRET) + log.count("hunter2")
    figure = f"DEBUG lines of failed pulls: {pulls}, the query shown as `?<redacted>`: {'yes' if seen else 'no'}; " \
             f"occurrences of the key in the log: {leaks}"
    return Result(figure, bool(seen) and pulls > 0 and leaks == 0)


@attack("10b", "deleting `goodhart.db-wal` after a crash",
        "lost 500 of 500 acknowledged pushes, as SQLite must; undocumented",
        "the README says the `-wal` and `-shm` files are part of the state", "(documentation)")
def attack_deleted_wal(lab: Lab) -> Result:
    agent = lab.agent("wal", lab.config("wal", source={"type": "http_push", "listen": "shared"})).start()
    status = agent.post("/v1/records", json=[record(f"w{i}", T0 + i) for i in range(500)]).status_code
    agent.kill()
    for suffix in ("-wal", "-shm"):
        (state_dir(agent) / (DB_FILENAME + suffix)).unlink(missing_ok=True)
    db = sqlite3.connect(f"file:{state_dir(agent) / DB_FILENAME}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()
    kept = stored(state_dir(agent), "w%") if "outputs" in tables else 0
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = f"{DB_FILENAME}-wal" in readme and "-shm" in readme
    figure = (f"500 pushed ({status}), SIGKILL, `-wal` and `-shm` deleted: {500 - kept} of 500 lost"
              + ("" if tables else " (the file kept no table at all)") + "; the README "
              f"names them as state: {'yes' if documented else 'no'}")
    return Result(figure, status == 202 and documented)


def errors_by_status(port: int) -> list[int]:
    """Requests that each must end in one error answer; the statuses received."""
    head = b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    requests_ = [
        b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",  # 404
        b"DELETE /v1/records HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",  # 405 (or 501)
        head + b"\r\n",  # 411
        b"GET /" + b"a" * 17_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",  # 414
        b"GET /metrics HTTP/1.1\r\nHost: t\r\n" + b"X-F: " + b"a" * 17_000 + b"\r\n\r\n",  # 431
        head + b"Content-Length: 2000000\r\n\r\n",  # 413
        head + b"Content-Length: +2\r\n\r\n[]",  # 400
        b"POST /v1/rebaseline HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",  # 415
    ]
    statuses = []
    for data in requests_:
        with raw(port, data) as sock:
            sock.settimeout(20)
            statuses.append(status_of(read_all(sock)))
    return statuses


@attack("10c", "411/414/431/404/500 answers; client disconnects", "counted nowhere; tracebacks on stderr",
        "every answer of 400 and up counted by status (`goodhart_http_errors_total{listener,status}`), dropped "
        "connections by reason; a disconnect is one DEBUG line", HTTP_TESTS)
def attack_error_answers(lab: Lab) -> Result:
    agent = shared(lab)
    before = agent.metrics()
    statuses = errors_by_status(agent.port)
    with raw(agent.port, b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n[{\"id\": "):
        pass  # gone with 90 bytes unsent
    wait_until(lambda: agent.value("goodhart_http_connections_dropped_total", listener="main", reason="disconnect")
               > before.get(("goodhart_http_connections_dropped_total",
                             (("listener", "main"), ("reason", "disconnect"))), 0), timeout=10)
    after = agent.metrics()
    received = Counter(statuses)
    counted = {s: int(delta(before, after, "goodhart_http_errors_total", listener="main", status=str(s)))
               for s in received}
    disconnects = delta(before, after, "goodhart_http_connections_dropped_total", listener="main", reason="disconnect")
    tracebacks = agent.log().count("Traceback")
    figure = (f"answers {', '.join(map(str, statuses))}; counted by status: "
              f"{'all' if counted == dict(received) else counted}; a client gone mid-body: dropped "
              f"disconnect {disconnects:g}; tracebacks in the log: {tracebacks}")
    held = 0 not in statuses and counted == dict(received) and disconnects == 1 and tracebacks == 0
    return Result(figure, held)
