"""agent.http.client and agent.http.secrets: Retry-After, backoff, size-limited replies, secrets."""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agent.config import ConfigError
from agent.http.client import ReadError, backoff_delay, parse_retry_after, read_limited
from agent.http.secrets import bearer_token, env_or_file, from_env, from_file
from agent.http.server import HttpServer, Response


# -- Retry-After --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("header", "seconds"), [
    ("7", 7.0), (" 7 ", 7.0), ("1.5", 1.5), ("0", 0.0), ("7200", 3600.0), ("3600", 3600.0),
])
def test_retry_after_delta_seconds_decimals_included_capped_at_an_hour(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_http_date_is_the_time_until_then_and_a_past_date_is_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 86400) == 3600.0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    waited = parse_retry_after(future)
    assert waited is not None and 110 <= waited <= 120


@pytest.mark.parametrize("header", [None, "", "soon", "inf", "Infinity", "nan", "-5", "-1.5", "1e3", "0x10",
                                    "Wed, 21 Oct 2015 07:28:00 -0000", "99999999999999999999999999999999" * 20])
def test_retry_after_absent_bad_negative_or_non_finite_is_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


# -- backoff ----------------------------------------------------------------------------------------------------------
def test_backoff_is_between_half_and_all_of_the_doubling_step_capped_at_the_maximum() -> None:
    rng = random.Random(7)
    for attempt in range(1, 40):
        step = min(30.0, 0.5 * 2 ** (attempt - 1))
        for _ in range(50):
            delay = backoff_delay(attempt, 0.5, 30.0, rng)
            assert step / 2 <= delay <= step


def test_backoff_is_reproducible_with_a_seeded_rng_and_jittered_across_draws() -> None:
    first = [backoff_delay(5, 1.0, 60.0, random.Random(3)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    draws = {backoff_delay(5, 1.0, 60.0, random.Random(seed)) for seed in range(20)}
    assert len(draws) == 20  # equal jitter: not every client retries at the same instant


def test_backoff_treats_attempt_zero_as_the_first_and_survives_huge_attempt_counts() -> None:
    rng = random.Random(1)
    assert 0.5 <= backoff_delay(0, 1.0, 60.0, rng) <= 1.0
    assert 30.0 <= backoff_delay(10_000, 1.0, 60.0, rng) <= 60.0


# -- size-limited reads ------------------------------------------------------------------------------------------------
@pytest.fixture
def replies() -> Iterator[HttpServer]:
    big = b"x" * 5000
    srv = HttpServer("127.0.0.1", 0)
    srv.route("GET", "/small", lambda _: Response(200, b"y" * 100))
    srv.route("GET", "/big", lambda _: Response(200, big))
    srv.route("GET", "/bomb", lambda _: Response(200, gzip.compress(big), "text/plain",
                                                  {"Content-Encoding": "gzip"}))
    srv.route("GET", "/broken-gzip", lambda _: Response(200, b"not gzip at all", "text/plain",
                                                        {"Content-Encoding": "gzip"}))
    srv.start(poll_interval=0.05)
    yield srv
    srv.stop()


def fetch(server: HttpServer, path: str, limit: int) -> bytes:
    with requests.get(f"http://127.0.0.1:{server.port}{path}", stream=True, timeout=5) as resp:
        return read_limited(resp, limit, time.monotonic() + 5)


def test_a_reply_within_the_limit_is_read_whole(replies: HttpServer) -> None:
    assert fetch(replies, "/small", 100) == b"y" * 100


def test_a_declared_length_above_the_limit_is_refused(replies: HttpServer) -> None:
    with pytest.raises(ReadError) as err:
        fetch(replies, "/big", 4999)
    assert err.value.reason == "too_large"
    assert err.value.detail == "5000 bytes"  # refused on its Content-Length, before reading


def test_a_compressed_reply_that_inflates_past_the_limit_is_refused(replies: HttpServer) -> None:
    with pytest.raises(ReadError) as err:
        fetch(replies, "/bomb", 1000)  # ~40 bytes on the wire, 5000 once decompressed
    assert err.value.reason == "too_large"
    assert fetch(replies, "/bomb", 5000) == b"x" * 5000


def test_a_body_that_does_not_decode_is_bad_body(replies: HttpServer) -> None:
    with pytest.raises(ReadError) as err:
        fetch(replies, "/broken-gzip", 1000)
    assert err.value.reason == "bad_body"


def test_a_reply_slower_than_the_deadline_times_out() -> None:
    srv = HttpServer("127.0.0.1", 0)
    srv.route("GET", "/", lambda _: Response(200, b"z"))
    srv.start(poll_interval=0.05)
    try:
        with requests.get(f"http://127.0.0.1:{srv.port}/", stream=True, timeout=5) as resp, \
                pytest.raises(ReadError) as err:
            read_limited(resp, 100, time.monotonic() - 1)
        assert err.value.reason == "timeout"
    finally:
        srv.stop()


# -- secrets ---------------------------------------------------------------------------------------------------------
def test_a_secret_from_the_environment_is_stripped_and_a_missing_one_names_its_key() -> None:
    assert from_env("TOKEN", "source.token_env", {"TOKEN": " s3cret\n"}) == "s3cret"
    with pytest.raises(ConfigError) as err:
        from_env("TOKEN", "source.token_env", {"TOKEN": "  "})
    assert err.value.problems == ["source.token_env: environment variable TOKEN is not set"]


def test_a_secret_from_a_file_is_stripped_and_unreadable_or_empty_files_name_their_key(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    assert from_file(str(tmp_path / "token"), "source.token_file") == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as err:
        from_file(str(tmp_path / "empty"), "source.token_file")
    assert err.value.problems == [f"source.token_file: {tmp_path / 'empty'} is empty"]
    with pytest.raises(ConfigError) as err:
        from_file(str(tmp_path / "missing"), "source.headers_file.X-Key")
    assert err.value.problems == [f"source.headers_file.X-Key: cannot read {tmp_path / 'missing'}: "
                                  "No such file or directory"]
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        from_file(str(tmp_path / "binary"), "source.token_file")


def test_bearer_token_and_api_keys_name_the_config_key_that_points_at_them(tmp_path: Path) -> None:
    assert bearer_token(None, None) is None
    assert bearer_token("T", None, environ={"T": "tok"}) == "tok"
    (tmp_path / "k").write_text("key")
    assert bearer_token(None, str(tmp_path / "k"), prefix="forward") == "key"
    with pytest.raises(ConfigError) as err:
        env_or_file("audits.0.llm_judge", "api_key_env", "JUDGE_KEY", "api_key_file", None, {})
    assert err.value.problems == ["audits.0.llm_judge.api_key_env: environment variable JUDGE_KEY is not set"]
    with pytest.raises(ConfigError) as err:
        env_or_file("audits.1.http_grader", "api_key_env", None, "api_key_file", str(tmp_path / "no"), {})
    assert err.value.problems[0].startswith("audits.1.http_grader.api_key_file: cannot read")

