"""Shared fixtures: the built binaries, ../shared, and helpers to run them."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
RUN = os.path.join(ROOT, "run")
HARNESS = os.path.join(ROOT, "tests", "harness")
EXPORT = os.path.join(ROOT, "export.py")
TOKENIZER = os.path.join(ROOT, "tokenizer.bin")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    for exe in (RUN, HARNESS):
        if not os.path.exists(exe):
            raise pytest.UsageError(f"{exe} is missing: run the tests with `make test`")


@pytest.fixture(scope="session")
def shared():
    """Path to ../shared; skips when it is absent, but fails under CI."""
    if not os.path.isdir(SHARED):
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is missing, and CI needs it")
        pytest.skip(f"{SHARED} is absent: tests on real models and tokenizers are skipped")
    return SHARED


def run(*args, input=None, check=True):
    """Runs ./run; returns the CompletedProcess (stdout and stderr as bytes)."""
    p = subprocess.run([RUN, *map(str, args)], input=input, capture_output=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"run {args} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    return p


def harness(*args, env=None):
    p = subprocess.run([HARNESS, *map(str, args)], capture_output=True, timeout=300, env=env)
    if p.returncode != 0:
        raise AssertionError(f"harness {args} failed: {p.stderr.decode(errors='replace')}")
    return p.stdout.decode()


def export(*args, check=True):
    p = subprocess.run([sys.executable, EXPORT, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"export.py {args} failed: {p.stderr}")
    return p


def logits(model_path, tokens, chunk=1, kv_cache="fp32"):
    """run.c's logits at every position, as a numpy array (T, vocab); the
    tokens go through the model `chunk` at a time, over a KV cache of kv_cache."""
    import numpy as np
    out = harness("logits", model_path, chunk, *tokens, env={**os.environ, "KV_CACHE": kv_cache})
    return np.array([[float(v) for v in line.split()] for line in out.strip().split("\n")])
