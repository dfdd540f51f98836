"""`convohub up` under `convohub simulate`: memory, inbound-to-assigned latency, nothing lost.

Usage: uv run python bench/hub_under_load.py [--rate 50] [--duration 300] [--seed 1]
           [--drain 60] [--survey-delay 5]

One run, on one machine:

1. starts `convohub up` as a subprocess on a free port with a temporary data directory and
   the documented example config (survey delay shortened to `--survey-delay` seconds so
   surveys are sent and answered within the run);
2. raw baseline: the rate of `GET /healthz` from the same client (64 connections, 3 s), the
   most the hub's HTTP stack answers with no work behind it;
3. runs the simulator (`convohub.cli.simulate.simulate`) at `--rate` new conversations a
   second for `--duration` seconds, with its simulated agents, sampling the resident memory
   of the hub's whole process tree (`/proc/<pid>/status` VmRSS, summed) every 0.5 s;
4. prints the peak RSS, the inbound-to-assigned latency p50/p99 (from the read model's
   routing.assigned time against the moment the simulator sent the first message), the
   requests per second the run achieved as a ratio of the healthz baseline, and whether
   every simulated message is in the read model.

The simulator runs in this process and shares the machine's cores with the hub: on a
small machine its own CPU use is part of what limits the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from convohub.cli.aiohttp_transport import AiohttpTransport
from convohub.cli.sample import EXAMPLE
from convohub.cli.simulate import SimulationStats, simulate
from convohub.runtime.config import parse_config

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by `root` and its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        total += times.get(pid, 0.0)
        pending.extend(child for child, parent in parents.items() if parent == pid)
    return total


async def healthz_rate(base: str, seconds: float = 3.0, connections: int = 64) -> float:
    """Requests a second the hub answers on /healthz from this client (the raw baseline),
    through the same HTTP client stack as the simulator's."""
    done = 0
    async with httpx.AsyncClient(base_url=base, transport=AiohttpTransport(connections)) as client:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                (await client.get("/healthz")).raise_for_status()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.monotonic() - started)


async def sample_memory(pid: int, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], tree_rss_bytes(pid))
        await asyncio.sleep(0.5)


def start_hub(folder: Path, config_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`convohub up` on a free port with its data in `folder`, once it answers /healthz."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (folder / "hub.log").open("w")  # a pipe nobody reads would fill and stall the hub
    command = ["uv", "run", "convohub", "up", "--port", str(port)]
    command += ["--data-dir", str(folder / ".convohub"), "--config", str(config_path)]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        if process.poll() is not None or time.monotonic() > deadline:
            stop_hub(process)
            raise SystemExit((folder / "hub.log").read_text()[-3000:])
        time.sleep(0.2)


def stop_hub(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


async def measure(
    arguments: argparse.Namespace, process: subprocess.Popen[bytes], base: str, config: Any
) -> int:
    peak = [0]
    idle_rss = tree_rss_bytes(process.pid)
    baseline = await healthz_rate(base)
    print(f"hub up on {base}; idle RSS {idle_rss / 2**20:.0f} MB")
    print(f"raw baseline: GET /healthz {baseline:,.0f} requests/s (64 connections)")
    sampler = asyncio.create_task(sample_memory(process.pid, peak))
    last = [0.0]

    def progress(stats: SimulationStats) -> None:
        if stats.elapsed - last[0] >= 10 or stats.phase == "done":
            last[0] = stats.elapsed
            print(f"  {stats.line()}  RSS {peak[0] / 2**20:.0f} MB", flush=True)

    started = time.monotonic()
    cpu_before = tree_cpu_seconds(process.pid)
    summary = await simulate(
        base,
        config,
        rate=arguments.rate,
        duration=arguments.duration,
        seed=arguments.seed,
        progress=progress,
        drain=arguments.drain,
    )
    wall = time.monotonic() - started
    hub_cpu = tree_cpu_seconds(process.pid) - cpu_before
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    request_rate = summary.requests / wall
    lost = len(summary.missing_messages)
    achieved = summary.conversations / arguments.duration
    print()
    print("\n".join(summary.lines()))
    print()
    print(
        f"offered load           {arguments.rate:g} new conversations/s "
        f"for {arguments.duration:g} s"
    )
    print(
        f"achieved               {achieved:.1f} conversations/s started ({summary.conversations})"
    )
    print(f"hub peak RSS           {peak[0] / 2**20:.0f} MB (process tree; aim < 500 MB)")

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"  # 0.0 is a figure, None is none

    print(
        f"inbound->assigned      p50 {seconds(summary.latency_p50)}, "
        f"p99 {seconds(summary.latency_p99)} over the {summary.latency_samples} conversations "
        f"assigned of {summary.conversations_in_read_model} (the others never were: under "
        "a backlog the figures leave out the longest waits)"
    )
    print(
        f"HTTP requests          {request_rate:,.0f}/s over {wall:.0f} s = "
        f"{request_rate / baseline:.3f} x the /healthz baseline"
    )
    print(
        f"hub CPU                {hub_cpu:.0f} s over {wall:.0f} s of wall time "
        f"= {hub_cpu / wall:.2f} of {os.cpu_count()} cores (load average "
        f"{os.getloadavg()[0]:.1f})"
    )
    print(
        f"nothing lost           {'yes' if lost == 0 else 'NO'}: {summary.messages_verified}"
        f"/{summary.messages} simulated messages in the read model"
    )
    return 0 if lost == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="new conversations a second")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of arrivals")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to let work finish")
    parser.add_argument("--survey-delay", type=int, default=5, help="survey delay (seconds)")
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="convohub-load-"))
    config_text = EXAMPLE.read_text(encoding="utf-8").replace(
        "delay_seconds: 300", f"delay_seconds: {arguments.survey_delay}"
    )
    config_path = folder / "convohub.yaml"
    config_path.write_text(config_text, encoding="utf-8")
    process, base = start_hub(folder, config_path)
    print(f"hub data and log in {folder}")
    try:
        status = asyncio.run(measure(arguments, process, base, parse_config(config_text, {})))
    finally:
        stop_hub(process)
        shutil.rmtree(folder / ".convohub", ignore_errors=True)  # the log stays for a look
    raise SystemExit(status)


if __name__ == "__main__":
    main()
