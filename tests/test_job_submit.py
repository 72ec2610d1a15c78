"""`ray job submit --working-dir .` of a one-trial study to a local head bound to 127.0.0.1.

The head gets its own temporary directory for session files and its own ports, so it does not
collide with the test session's Ray. The client sends the cluster's token (RAY_AUTH_MODE=token).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_head(temp_dir: Path) -> None:
    """Stop the processes of the head started in `temp_dir`, and no others.

    `ray stop` would end every Ray process on the machine, including the test session's Ray, so
    this finds the head's processes by the session directory in their command lines.
    """
    mine = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(temp_dir) in cmdline and process.pid != os.getpid():
            mine.append(process)
    for process in mine:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=15)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=15)
    shutil.rmtree(temp_dir, ignore_errors=True)


def submit_when_ready(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `ray job submit`, again while the head's job agent is still starting (up to 20 tries)."""
    for _ in range(20):
        job = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        if "No available agent to submit job" not in job.stderr + job.stdout:
            return job
        time.sleep(3)
    return job


def test_job_submit_runs_study(criteo_10k_prepared, tmp_path):
    study = tmp_path / "job.toml"
    study.write_text(
        'name = "job"\nmethods = ["base"]\nseeds = [0]\nmax_retries = 0\n'
        f'[datasets.criteo-10k]\npath = "{criteo_10k_prepared}"\n'
        "[overrides.train]\nmax_epochs = 1\n")
    output = tmp_path / "out"

    gcs_port, dashboard_port, agent_port = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    ray = str(VENV_BIN / "ray")
    # A short path, because the session directory contains Unix sockets, whose paths are length-limited.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayjob-", dir="/tmp"))

    start = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs_port),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
             # The job agent's default port (52365) is taken when another Ray runs on this machine.
             "--dashboard-agent-listen-port", str(agent_port), "--num-cpus", "2",
             "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr

        submit = [ray, "job", "submit", "--address", f"http://127.0.0.1:{dashboard_port}", "--working-dir", ".",
                  "--", "python", "-m", "ablations", "--study", str(study), "--output", str(output)]
        job = submit_when_ready(submit, env)
        assert job.returncode == 0, job.stdout + job.stderr
        assert "connected to the Ray cluster" in job.stdout
        assert "finished  base on criteo-10k, seed 0" in job.stdout
        assert "| Base | 0." in job.stdout
    finally:
        stop_head(temp_dir)

    frame = pd.read_parquet(output / "results.parquet")
    assert list(frame["method"]) == ["base"]
    assert list(frame["status"]) == ["ok"]
    assert 0.0 < frame.loc[0, "test_auc"] < 1.0
