"""The cpu kernel build never hangs: a build killed with SIGKILL or SIGHUP leaves torch's
``lock`` file behind (on which torch's cpp_extension would wait forever); the next build takes
it over with a message and finishes. A live build's lock is waited on with a message naming
it, and after ``SSMBENCH_KERNEL_LOCK_TIMEOUT_S`` the torch backend is used with one logged line.
A stand-in source with the kernel's three entry points keeps each build to about a second;
a compiler wrapper that sleeps first makes the killed build slow enough to be killed."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest

import kernels.backends.cpu as cpu

REPO = Path(__file__).resolve().parents[2]

STAND_IN = """\
extern "C" int ssm_cpu_forward(void *args, int n) { return 0; }
extern "C" int ssm_cpu_backward(void *args, int n) { return 0; }
extern "C" int ssm_cpu_lanes(int n) { return 1; }
"""

#: builds the kernel from the source named on the command line, prints the backend's state
BUILD = """\
import sys
from pathlib import Path
import kernels.backends.cpu as cpu
cpu.SOURCE = Path(sys.argv[1])
print("available:", cpu.CpuKernelBackend().available())
"""

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")


@pytest.fixture
def build(tmp_path, monkeypatch):
    source = tmp_path / "stand_in.cpp"
    source.write_text(STAND_IN)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SSMBENCH_KERNEL_CACHE": str(cache)}
    env.pop("SSMBENCH_NO_CPP_KERNELS", None)
    monkeypatch.setenv("SSMBENCH_KERNEL_CACHE", str(cache))
    monkeypatch.setattr(cpu, "SOURCE", source)
    build_dir = cpu.kernel_build_dir()

    def start(**extra_env) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", BUILD, str(source)],
                                env={**env, **extra_env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    return start, build_dir


def communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # the hang this file is about: do not leave it behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_a_killed_build_does_not_block_the_next_one(build, tmp_path, sig):
    start, build_dir = build
    slow_cxx = tmp_path / "slow-c++"
    slow_cxx.write_text(f"#!/bin/sh\nsleep 60\nexec {shutil.which('c++')} \"$@\"\n")
    slow_cxx.chmod(0o755)
    proc = start(CXX=str(slow_cxx))
    deadline = time.time() + 60
    while not (build_dir / "lock").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # inside the compiler wrapper
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)
    assert (build_dir / "lock").exists(), "the killed build left no lock to take over"
    rerun = start()
    out, err = communicate(rerun, 120)
    assert rerun.returncode == 0, err
    assert "available: (True, '')" in out
    assert f"removing {build_dir / 'lock'}, left by a killed build" in err


def test_a_live_build_is_waited_on_then_torch_is_used(build):
    start, build_dir = build
    build_dir.mkdir(parents=True)
    with filelock.FileLock(str(build_dir / "build.lock")):  # a build in progress elsewhere
        began = time.time()
        proc = start(SSMBENCH_KERNEL_LOCK_TIMEOUT_S="1")
        out, err = communicate(proc, 60)
    assert proc.returncode == 0, err
    assert f"waiting for {build_dir / 'build.lock'}" in err
    assert "falling back to the torch backend" in err and "held by another build" in err
    assert "available: (False" in out
    assert time.time() - began < 30
