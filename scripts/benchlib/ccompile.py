"""Compiles a C program of scripts/benchlib (gcc -O2 -Wall) for the bench: rt_subscribers.c
(realtime_bench.py) and sync_floor.c (bench.py's sync_commit_8w floor)."""
import os
import subprocess


def compile_c(name, out_dir, *flags):
    """Compiles scripts/benchlib/<name>.c into out_dir/<name>; returns the binary's path."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".c")
    binary = os.path.join(out_dir, name)
    subprocess.run(["gcc", "-O2", "-Wall", *flags, "-o", binary, source], check=True)
    return binary
