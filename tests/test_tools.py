"""The measuring tools (tools/*.c) include run.c or stand beside it: they must
keep building as run.c changes, and tools/stream.c, which runs run.c's own
matmul over a whole token's matrices, must run to its end."""

import os
import re
import subprocess

from conftest import ROOT


def build(tmp_path, source, *flags):
    exe = tmp_path / os.path.splitext(source)[0]
    p = subprocess.run(["cc", "-O2", "-march=native", "-fopenmp", "-Wall", *flags, "-o", str(exe),
                        os.path.join(ROOT, "tools", source), "-lm"], capture_output=True, text=True)
    assert p.returncode == 0, f"{source} does not build:\n{p.stderr}"
    return exe


def test_kernel_and_bandwidth_tools_build(tmp_path):
    build(tmp_path, "kernels.c")
    build(tmp_path, "bandwidth.c")


def test_stream_tool_runs_generation_products_with_the_prefetch_distance_given(tmp_path):
    exe = build(tmp_path, "stream.c", "-DPREFETCH_L2_AHEAD=4096", "-DPREFETCH_L1_AHEAD=1024")
    p = subprocess.run([str(exe), "1"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert p.returncode == 0, p.stderr
    assert "prefetch into L2 4096 bytes ahead, into L1 1024" in p.stdout
    mean = re.search(r"mean: read ([\d.]+) GB/s, q8_0 ([\d.]+) \((\d+)% of the read\), q4_0 ([\d.]+) \((\d+)%\), "
                     r"q4_0 loads only ([\d.]+) \((\d+)%\)", p.stdout)
    assert mean, p.stdout
    assert all(float(v) > 0 for v in mean.groups())


def test_bandwidth_tool_reads_a_buffer_of_the_size_given(tmp_path):
    """./bandwidth THREADS BYTES: make bench's ceiling for a row, a read of as
    many bytes as the row's weights; a size it cannot use is refused."""
    exe = build(tmp_path, "bandwidth.c")
    p = subprocess.run([str(exe), "1", "1e6"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert float(re.fullmatch(r"threads 1: ([\d.]+) GB/s \(checksum \d+\)\n", p.stdout).group(1)) > 0
    p = subprocess.run([str(exe), "1", "100"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "BYTES must be from 4096 to 64e9, not 100" in p.stderr
