"""scripts/benchlib/bench.py's parsing of scripts/wrk/run-rest.sh and of the cluster bench's lag lines,
on outputs recorded from real runs
(Tests/Bench/recorded/: run-rest.txt from `scripts/wrk/run-rest.sh 3` with the release build of
4d6fdcb at 12:47 UTC 2026-12-06 on a quiet machine; run-rest-without-primary.txt from the script
before the cluster primary's POST section (13:03 UTC 2026-12-04, loaded machine);
run-rest-six-rates.txt from the script before the baseline section; cluster-quick.txt from `aerodb bench --workload cluster`, below). The REST rows of docs/BENCHMARKS.md once went stale for days because the
script began printing six rates while the parser took the first three or failed: every expected
figure must be found by its section, once, or the parse fails naming what is missing.

Run by scripts/test: .venv/bin/python -m pytest -q -p no:cacheprovider Tests/Bench
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "benchlib"))
import bench  # noqa: E402


def recorded(name):
    with open(os.path.join(HERE, "recorded", name)) as f:
        return f.read()


def test_full_output_gives_every_figure_by_section():
    rest = bench.parse_rest(recorded("run-rest.txt"))
    assert set(rest) == set(bench.REST_EXPECTED)
    for figures in rest.values():
        assert figures["rps"] > 0 and figures["p99_ms"] > 0
    # The values of that recorded run, each from its own section (not by position).
    assert rest[(bench.REST_SINGLE, bench.REST_GET)] == {"rps": 25422.55, "p99_ms": 6.18}
    assert rest[(bench.REST_BASELINE, bench.REST_GET)] == {"rps": 40118.49, "p99_ms": 3.51}
    assert rest[(bench.REST_SINGLE, bench.REST_POST)]["rps"] == 10032.20
    assert rest[(bench.REST_PRIMARY, bench.REST_POST)] == {"rps": 9446.21, "p99_ms": 12.95}
    assert rest[(bench.REST_REPLICA, bench.REST_POST)] == {"rps": 4515.93, "p99_ms": 24.96}


def test_output_without_the_cluster_primarys_post_is_refused():
    # The forwarded POST is set against the POST to the same cluster's primary: an output from
    # before that section must not fall back to the single node's POST silently.
    with pytest.raises(RuntimeError, match="the cluster's primary: POST one row"):
        bench.parse_rest(recorded("run-rest-without-primary.txt"))


def test_six_rate_output_without_the_baseline_is_refused_not_misread():
    # Recorded from the script before the baseline section (12:40 UTC 2026-12-04, old binary).
    out = recorded("run-rest-six-rates.txt")
    with pytest.raises(RuntimeError, match="bare Hummingbird route: GET by key"):
        bench.parse_rest(out)


def test_wrk_latency_summary_is_not_taken_for_the_99th_percentile():
    # The old script's grep let wrk's "Latency ... 83.99%" line through (recorded above it):
    # the p99 of that section is the "99%" line, 77.91 ms, whatever the order of the lines.
    old = recorded("run-rest-six-rates.txt")
    assert "83.99%" in old
    full = recorded("run-rest.txt")
    single_get = old.split("== single node: GET 20 rows")[0]
    out = full.replace(full.split("== single node: GET 20 rows")[0], single_get, 1)
    assert bench.parse_rest(out)[(bench.REST_SINGLE, bench.REST_GET)] == {"rps": 4768.31, "p99_ms": 77.91}


def test_non_2xx_answers_fail_the_workload():
    out = recorded("run-rest.txt").replace("Requests/sec:  40118.49",
                                           "  Non-2xx or 3xx responses: 17\nRequests/sec:  40118.49", 1)
    with pytest.raises(RuntimeError, match="bare Hummingbird route: GET by key: 17 non-2xx"):
        bench.parse_rest(out)


def test_unknown_or_repeated_section_fails():
    out = recorded("run-rest.txt")
    with pytest.raises(RuntimeError, match="unknown section"):
        bench.parse_rest(out + "== single node: DELETE everything\nRequests/sec: 1.0\n")
    first = out.split("== ")[1]
    with pytest.raises(RuntimeError, match="twice"):
        bench.parse_rest(out + "== " + first)


def test_p99_units():
    out = recorded("run-rest.txt")
    out = out.replace("99%    3.51ms", "99%  998.00us", 1).replace("99%    6.18ms", "99%    1.50s", 1)
    rest = bench.parse_rest(out)
    assert rest[(bench.REST_BASELINE, bench.REST_GET)]["p99_ms"] == pytest.approx(0.998)
    assert rest[(bench.REST_SINGLE, bench.REST_GET)]["p99_ms"] == pytest.approx(1500.0)


# `aerodb bench --workload cluster --seconds 3 --promotions 5` with the release build of 97e2c83
# (cluster-quick.txt, 03:27 UTC 2026-12-06, quiet machine): the kernel lag phase prints two
# figures, per shipped batch and probed as PostgreSQL's side is probed.

def test_lag_gives_the_batch_and_the_probe_figures():
    lag = bench.parse_lag(recorded("cluster-quick.txt"))
    assert lag["batch"] == {"rate": 9992, "p50_ms": 1.06, "p99_ms": 5.15}
    assert lag["probe"] == {"rate": 9992, "p50_ms": 2.88, "p99_ms": 8.16, "samples": 174}


def test_lag_is_not_taken_from_the_http_phase():
    # The HTTP phase's line ("replica visibility lag at 5275 commits/s") has the same shape
    # without "kernel": with the kernel line gone, the parse fails instead of taking it.
    out = "\n".join(l for l in recorded("cluster-quick.txt").splitlines() if not l.startswith("kernel replica visibility lag"))
    assert "replica visibility lag at 5275" in out
    with pytest.raises(RuntimeError, match="one kernel lag batch line, found 0"):
        bench.parse_lag(out)


def test_output_without_the_probe_is_refused():
    # A binary from before the probe prints only the per-batch line.
    out = "\n".join(l for l in recorded("cluster-quick.txt").splitlines() if "visibility probe" not in l)
    with pytest.raises(RuntimeError, match="one kernel lag probe line, found 0"):
        bench.parse_lag(out)
