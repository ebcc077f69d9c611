"""``goodhart-agent plan`` (issue #14, point 3): warm-up and detection delay at an audit rate, checked
against the agent's own detector on synthetic pairs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from support import write_config

from agent.cli import main
from agent.cli.planning import build_plan
from agent.config import Config, load_config
from agent.detect.base import PairObservation
from agent.detect.factory import detector_factory
from agent.detect.planning import (
    LevelTest,
    first_verdict_pairs,
    mean_delay_pairs,
    median_delay_pairs,
    rate_for,
    seconds_for,
)

SLOPE, NOISE = 0.6, 0.8  # audit = 0.6 * proxy + N(0, 0.8^2), as the detector tests use
TEST = LevelTest(h=12.6, k=0.5, tau=0.07, scale=1.0)


def agent(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line in-process (the same ``main`` the console script runs): exit code, stdout, stderr."""
    try:
        code = main(list(args))
    except SystemExit as stop:  # argparse refuses bad usage this way
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- the maths ---------------------------------------------------------------------------------
def test_larger_shifts_are_detected_in_fewer_pairs() -> None:
    medians = [median_delay_pairs(TEST, d) for d in (0.5, 1.0, 2.0, 3.0)]
    assert medians == sorted(medians, reverse=True)
    assert medians[-1] >= 1.0


def test_the_median_is_below_the_mean_where_run_lengths_are_skewed() -> None:
    # At a shift equal to k the CUSUM has no drift: run lengths spread, their median lies well
    # below Siegmund's mean; for a shift of 2 they are concentrated and the two nearly agree.
    assert median_delay_pairs(TEST, 0.5) < 0.85 * mean_delay_pairs(TEST.h, TEST.k, 0.5)
    assert median_delay_pairs(TEST, 2.0) == pytest.approx(mean_delay_pairs(TEST.h, TEST.k, 2.0), rel=0.15)


def test_a_tiny_shift_takes_about_as_long_as_a_false_alarm() -> None:
    # Nothing distinguishes it from noise: the alarm comes when a false one would.
    assert median_delay_pairs(TEST, 0.01) > 1000 * median_delay_pairs(TEST, 1.0)


def test_a_segment_warms_up_with_the_whole_streams_span_and_a_pinned_reference_not_at_all() -> None:
    assert first_verdict_pairs(200) == 200
    assert first_verdict_pairs(200, 0.1) == 200  # one reference span for all segments (issue #14)
    assert first_verdict_pairs(200, 0.1, pinned=True) == 0
    with pytest.raises(ValueError, match="share"):
        first_verdict_pairs(200, 0.0)


def test_the_rate_for_a_target_meets_it_exactly() -> None:
    rate = rate_for(23.0, 86400.0, 15.0)
    assert seconds_for(23.0, rate, 15.0) == pytest.approx(86400.0)


def test_no_rate_meets_a_target_within_half_a_detect_tick() -> None:
    assert rate_for(10.0, 7.0, 15.0) == math.inf
    assert rate_for(math.inf, 86400.0, 15.0) == math.inf


# -- the command ---------------------------------------------------------------------------------
def test_plan_json_states_warmup_delays_and_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml")
    code, out, err = agent(capsys, "plan", "--config", str(config), "--audits-per-second", "0.001", "--shift", "1",
                           "--shift", "2", "--segment-share", "0.2", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["per_test_arl"] == 400_000  # 2 pairs x 2 x the default 100,000
    assert plan["warmup_stream_seconds"] == pytest.approx(200 / 0.001 + 7.5)
    assert plan["warmup_segment_seconds"] == pytest.approx(200 / 0.001 + 7.5)  # the stream's span
    one, two = plan["shifts"]
    assert (one["shift"], two["shift"]) == (1.0, 2.0)
    assert one["median_pairs"] > two["median_pairs"] > 0
    assert one["stream_seconds"] == pytest.approx(one["median_pairs"] / 0.001 + 7.5)
    assert one["segment_rate"] == pytest.approx(5 * one["stream_rate"])


def test_plan_text_names_each_shift_and_the_rate_a_day_needs(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = agent(capsys, "plan", "--config", str(write_config(tmp_path / "c.yaml")),
                           "--audits-per-second", "0.001")
    assert code == 0, err
    assert "first verdict" in out and "whole stream: 2.3 days" in out
    rows = [line.split() for line in out.splitlines() if line.strip().split(" ")[0] in ("0.5", "1", "2")]
    assert [row[0] for row in rows] == ["0.5", "1", "2"]
    assert "audit rate to alarm within 1.0 days" in out


def test_plan_refuses_a_share_above_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = agent(capsys, "plan", "--config", str(write_config(tmp_path / "c.yaml")),
                         "--audits-per-second", "1", "--segment-share", "1.5")
    assert code == 2
    assert "--segment-share" in err


def test_plan_refuses_a_config_without_the_decoupling_detector(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", detection={"detector": "placeholder"})
    code, _, err = agent(capsys, "plan", "--config", str(config), "--audits-per-second", "1")
    assert code == 2
    assert "detection.detector" in err


def test_check_config_points_to_plan_when_warmup_exceeds_a_day(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path / "c.yaml"))
    slow_code, slow, _ = agent(capsys, "check-config", config, "--audits-per-second", "0.001")
    fast_code, fast, _ = agent(capsys, "check-config", config, "--audits-per-second", "0.01")
    assert slow_code == fast_code == 0
    assert "goodhart-agent plan" in slow and "warm-up takes 2.3 days" in slow
    assert "goodhart-agent plan" not in fast


# -- the check against the detector ---------------------------------------------------------------
def simulated_delays(config_path: Path, shift: float, rate: float, runs: int, seed: int) -> np.ndarray:
    """Seconds from a step drop of the audit by ``shift`` residual s.d. to the first alarm verdict,
    per run: the agent's own detector (as the config builds it) fitted on a fresh reference, 200
    in-control pairs more, then Poisson arrivals at ``rate`` and verdicts on detect ticks at a random
    phase. Bounded: a run gives up (inf, above any median) after 4 times the plan's pairs."""
    config = load_config(config_path)
    make = detector_factory(config)
    tick = config.schedule.detect_seconds
    d = config.detection
    cap = 4 * median_delay_pairs_for(config, shift) + 50
    out = []
    for run in range(runs):
        rng = np.random.default_rng([seed, run])
        det = make()
        n = d.reference_pairs + 200
        proxy = rng.normal(size=n)
        audit = SLOPE * proxy + rng.normal(scale=NOISE, size=n)
        for i in range(n):
            det.observe_pair(PairObservation(float(i - n), float(proxy[i]), float(audit[i])))
        t, next_tick, delay = 0.0, rng.uniform(0.0, tick), math.inf
        for _ in range(int(cap)):
            t += rng.exponential(1.0 / rate)
            while next_tick < t and delay == math.inf:
                if det.verdict(next_tick).state == "alarm":
                    delay = next_tick
                next_tick += tick
            if delay < math.inf:
                break
            p = rng.normal()
            det.observe_pair(PairObservation(t, p, SLOPE * p + rng.normal(scale=NOISE) - shift * NOISE))
        out.append(delay)
    return np.array(out)


def median_delay_pairs_for(config: Config, shift: float) -> float:
    return build_plan(config, 1.0, (shift,)).shifts[0].median_pairs


@pytest.mark.slow
@pytest.mark.parametrize(("shift", "runs"), [(0.5, 200), (1.0, 80), (2.0, 80), (3.0, 80)])
def test_predicted_delay_is_within_30_percent_of_the_simulated_median(tmp_path: Path, shift: float,
                                                                      runs: int) -> None:
    # 0.1 audited pairs/s with verdicts every 15 s: a tick brings 1.5 pairs, so both the arrival
    # of the pairs and the wait for the tick count in the delay the plan must predict. At 0.5
    # (= k: no drift) run lengths spread widely (quartiles ~0.5x and ~2x the median), so the
    # median needs more runs to be known within ~10%.
    path = write_config(tmp_path / "c.yaml")
    rate = 0.1
    predicted = build_plan(load_config(path), rate, (shift,)).shifts[0].stream_seconds
    delays = simulated_delays(path, shift, rate, runs=runs, seed=14)
    observed = float(np.median(delays))
    assert 0.7 * observed <= predicted <= 1.3 * observed, (shift, predicted, observed)
