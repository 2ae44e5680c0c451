"""scripts/benchlib/sync_floor.c, the C floor that scripts/bench sets beside sync_commit_8w: it is
compiled and run for real here (two processes, loopback TCP, O_DIRECT | O_DSYNC logs in a
temporary directory), and bench.py's parse of its line is checked on that output. No rate is
asserted (figures are information, docs/BENCHMARKS.md); what is checked is that the model really
commits, groups, and writes both logs.

Run by scripts/test: .venv/bin/python -m pytest -q -p no:cacheprovider Tests/Bench
"""
import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "benchlib"))
import bench  # noqa: E402


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return bench.sync_floor_binary(str(tmp_path_factory.mktemp("floor")))


@pytest.mark.parametrize("mode", ["serial", "parallel"])
def test_both_modes_commit_durably_on_both_sides(binary, mode, tmp_path):
    figures = bench.sync_floor(binary, mode, 4, 0.3, str(tmp_path))
    assert figures["mode"] == mode and figures["writers"] == 4
    assert figures["commits"] > 0 and 0 < figures["batches"] <= figures["commits"]
    # Both logs were written where the model says: the first block of each holds records.
    for log in ("primary.log", "replica.log"):
        with open(tmp_path / log, "rb") as f:
            assert os.fstat(f.fileno()).st_size == 64 << 20
            assert f.read(4096).count(b"x") >= 1100, log


@pytest.mark.parametrize("args", [["both", "8", "1"], ["serial", "0", "1"], ["serial", "8", "0"], ["serial", "8", "1e9"],
                                  ["serial", "8x", "1"], ["serial", "99999999999999999999", "1"], ["serial", "8", "1s"],
                                  ["serial", "8", "nan"]])
def test_bad_arguments_are_refused_with_usage(binary, args, tmp_path):
    done = subprocess.run([binary, *args, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip(), (args, done)


def test_an_unexpected_line_is_refused_not_misread(tmp_path):
    script = tmp_path / "fake"
    script.write_text("#!/bin/sh\necho 'sync_floor: mode=serial writers=8 commits=5 rate=9'\n")
    script.chmod(0o755)
    with pytest.raises(RuntimeError, match="unexpected output"):
        bench.sync_floor(str(script), "serial", 8, 1, str(tmp_path))


def test_a_replica_that_dies_ends_the_run_with_an_error_not_a_hang(binary, tmp_path):
    primary = subprocess.Popen([binary, "serial", "4", "30", str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        children = []
        def filled(log):
            return (tmp_path / log).exists() and (tmp_path / log).stat().st_size == 64 << 20

        for _ in range(200):  # the replica is the primary's only child; the run starts once both logs are filled
            children = subprocess.run(["pgrep", "-P", str(primary.pid)], capture_output=True, text=True).stdout.split()
            if children and filled("primary.log") and filled("replica.log"):
                break
            time.sleep(0.05)
        assert children, "no replica process"
        time.sleep(0.5)  # committing by now
        os.kill(int(children[0]), signal.SIGKILL)
        out, err = primary.communicate(timeout=10)  # far below the 30 s run: no writer waits forever
        assert primary.returncode == 1 and err.strip() and not out, (primary.returncode, out, err)
    finally:
        if primary.poll() is None:
            primary.kill()
            primary.wait()
