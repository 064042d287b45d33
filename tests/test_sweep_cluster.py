"""A sweep over a Ray cluster of two nodes, one of them killed mid-sweep: simulated on this machine by two
network namespaces joined by a veth pair (10.200.0.1 and 10.200.0.2), so that nothing listens on or
sends to any network but the test's own. Needs root and iproute2's ``ip`` (CI runs as root)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppo_np.rundir import CHECKPOINT_NAME
from ppo_np.sweep import RESULT_NAME

from test_sweep import sweep_command, updates_and_starts

HEAD, WORKER = "10.200.0.1", "10.200.0.2"
PORT = 6379


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def kill_namespace(name: str) -> None:
    """SIGKILL every process in the network namespace: a node lost at once, as a machine losing power."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def two_nodes(tmp_path):
    """A Ray head in namespace A and a worker node in namespace B, one CPU each; torn down afterwards."""
    suffix = str(os.getpid())
    a, b = f"ppoA{suffix}", f"ppoB{suffix}"
    env = {key: value for key, value in os.environ.items()
           if key != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # an embedded instance's setting: it forbids a second node
    env.update(PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", f"v{a}"[:15], "type", "veth", "peer", "name", f"v{b}"[:15])
        for ns, address in ((a, HEAD), (b, WORKER)):
            device = f"v{ns}"[:15]
            sh("ip", "link", "set", device, "netns", ns)
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", device)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", device, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        logs = tmp_path / "ray-logs"
        logs.mkdir()
        subprocess.Popen(["ip", "netns", "exec", a, ray_cli, "start", "--head", "--node-ip-address", HEAD, "--port",
                          str(PORT), "--num-cpus", "1", "--include-dashboard", "false", "--block"], env=env,
                         stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_nodes(a, env, 1)
        subprocess.Popen(["ip", "netns", "exec", b, ray_cli, "start", "--address", f"{HEAD}:{PORT}",
                          "--node-ip-address", WORKER, "--num-cpus", "1", "--block"], env=env,
                         stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_nodes(a, env, 2)
        yield a, b, env
    finally:
        for ns in (a, b):
            kill_namespace(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def wait_for_nodes(namespace: str, env: dict, count: int, timeout: float = 90) -> None:
    probe = (f"import ray; ray.init(address='{HEAD}:{PORT}', logging_level='ERROR'); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe], env=env,
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip() == str(count):
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster did not reach {count} nodes: {out.stderr[-500:]}")


@pytest.mark.slow
def test_a_sweep_spread_over_two_nodes_finishes_with_nothing_lost_when_one_dies(tmp_path, two_nodes):
    a, b, env = two_nodes
    out = tmp_path / "sweep"
    total = 40_000
    driver = subprocess.Popen(["ip", "netns", "exec", a, *sweep_command(
        "custom_envs:Line-v0", out, "--address", f"{HEAD}:{PORT}", "--seeds", "0-3", "--total-steps", str(total),
        "--json", "--set", "checkpoint_every=5")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("default/seed-*/" + CHECKPOINT_NAME))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # a trial under way on each node
    assert not list(out.glob("default/seed-*/" + RESULT_NAME)), "trials ended before the node could be killed"
    kill_namespace(b)
    stdout, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout)
    assert summary["configurations"][0]["seeds"] == [0, 1, 2, 3]
    resumed = 0
    for seed in range(4):
        run = out / "default" / f"seed-{seed}"
        result = json.loads((run / RESULT_NAME).read_text())
        assert result["steps"] == total and result["node"] == HEAD  # node B died before any trial ended
        updates, starts = updates_and_starts(run)
        assert updates == list(range(1, total // 32 + 1))  # every update once, none lost, none twice
        resumed += len(set(starts)) > 1
    assert resumed == 1  # the trial that ran on node B continued on node A from its checkpoint
