"""``make bench``: anysmtp against stdlib smtplib and aiosmtplib on smtp-sink.

Starts Postfix's ``smtp-sink`` (a C server that discards mail) on a free
loopback port, then measures every client in every scenario, each measurement
in a fresh child process (``worker.py``), the clients interleaved round-robin
over several repetitions, and the sink and the clients pinned to one CPU.
Prints a table of medians with ratios against smtplib (and anysmtp on asyncio
against aiosmtplib), checks the targets of the performance issue, and writes
everything, with a description of the machine, to ``bench/results.json``.

    python bench/run.py            # the default run (a few minutes)
    python bench/run.py --quick    # a smoke test: smaller counts, one repetition
    python bench/run.py --full     # more repetitions and larger counts

``ANYSMTP_BENCH_SCALE`` multiplies the message counts, ``ANYSMTP_BENCH_REPS``
sets the repetitions; see ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import benchdefs
from benchdefs import HOST, Params

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WORKER = BENCH_DIR / "worker.py"
SCENARIO_ORDER = (
    "small",
    "rcpt100",
    "concurrent",
    "big-bytes",
    "big-file",
    "connect",
    "noop",
    "hop",
    "pool",
)

Metrics = dict[str, float]


# -- the server ----------------------------------------------------------------


def find_smtp_sink() -> str | None:
    found = shutil.which("smtp-sink")
    if found:
        return found
    for candidate in ("/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class Sink:
    """smtp-sink on a free loopback port, pinned to ``cpu`` (``-1``: not pinned).

    It advertises PIPELINING (smtp-sink does unless given ``-p``), takes a
    listen backlog of 1000 and up to 256 sessions at once, and throws every
    message away.
    """

    def __init__(self, binary: str, cpu: int, log: IO[bytes]) -> None:
        self.binary = binary
        self.cpu = cpu
        self.log = log
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []
        self.ehlo_features: dict[str, str] = {}
        self.pinned_with = "not pinned"

    def start(self) -> None:
        self.port = free_port()
        command = [self.binary]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # smtp-sink refuses to run as root
        command += [f"{HOST}:{self.port}", "1000"]
        taskset = shutil.which("taskset")
        if self.cpu >= 0 and taskset:
            command = [taskset, "-c", str(self.cpu), *command]
            self.pinned_with = f"taskset -c {self.cpu}"
        self.command = command
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.cpu >= 0 and not taskset:
            os.sched_setaffinity(self.process.pid, {self.cpu})
            self.pinned_with = f"sched_setaffinity({self.cpu})"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            if not self.alive():
                raise RuntimeError(f"smtp-sink exited: {' '.join(self.command)}")
            try:
                with smtplib.SMTP(HOST, self.port, timeout=5) as probe:
                    probe.ehlo()
                    self.ehlo_features = dict(probe.esmtp_features)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None


# -- running the measurements ------------------------------------------------


@dataclasses.dataclass
class Cell:
    """The samples of one client in one scenario, or why there are none."""

    samples: list[Metrics] = dataclasses.field(default_factory=list)
    error: str | None = None

    def median(self, metric: str) -> float | None:
        values = [sample[metric] for sample in self.samples if metric in sample]
        return statistics.median(values) if values else None

    def to_json(self) -> dict[str, Any]:
        metrics = sorted({name for sample in self.samples for name in sample})
        return {
            "error": self.error,
            "samples": self.samples,
            "median": {name: self.median(name) for name in metrics},
            "min": {name: self.extreme(name, min) for name in metrics},
            "max": {name: self.extreme(name, max) for name in metrics},
        }

    def extreme(
        self, metric: str, pick: Callable[[list[float]], float]
    ) -> float | None:
        values = [sample[metric] for sample in self.samples if metric in sample]
        return pick(values) if values else None


def run_worker(
    client: str,
    scenario: str,
    port: int,
    cpu: int,
    params: Params,
    timeout: float,
    env: dict[str, str],
) -> tuple[Metrics | None, str | None]:
    """One measurement in a fresh process: its metrics, or an error message."""
    command = [
        sys.executable,
        str(WORKER),
        client,
        scenario,
        "--port",
        str(port),
        "--cpu",
        str(cpu),
        "--params",
        params.to_json(),
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        answer: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        stderr = [line for line in done.stderr.splitlines() if line.strip()]
        last = stderr[-1] if stderr else "no output"
        return None, f"worker exited with {done.returncode}: {last}"
    if not answer.get("ok"):
        return None, str(answer.get("error", "unknown error"))
    metrics: Metrics = {name: float(value) for name, value in answer["metrics"].items()}
    return metrics, None


def short(value: float | None) -> str:
    """A number in a few significant digits."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


#: What the progress line shows for each scenario: (metric, unit, scale).
PROGRESS: dict[str, tuple[str, str, float]] = {
    "small": ("rate", "msg/s", 1),
    "rcpt100": ("rate", "msg/s", 1),
    "concurrent": ("rate", "msg/s", 1),
    "big-bytes": ("seconds", "s", 1),
    "big-file": ("seconds", "s", 1),
    "connect": ("per_connection", "ms", 1000),
    "noop": ("per_call_us", "us", 1),
    "hop": ("hop_us", "us", 1),
    "pool": ("rate", "msg/s", 1),
}


def run_all(
    sink: Sink,
    scenarios: Sequence[str],
    clients: Sequence[str],
    params: Params,
    cpu: int,
    timeout: float,
    env: dict[str, str],
) -> dict[tuple[str, str], Cell]:
    """Every (scenario, client) pair ``params.repetitions`` times, round-robin.

    The order of the clients rotates from one repetition to the next, so that no
    client always runs first (or last) after the large-message scenario.  A pair
    that failed is not tried again in later repetitions.
    """
    cells: dict[tuple[str, str], Cell] = {}
    for scenario in scenarios:
        for client in benchdefs.clients_for(scenario):
            if client in clients:
                cells[scenario, client] = Cell()
    preflight = dataclasses.replace(params, noops=5, small_messages=5, warmup=1)
    for client in clients:
        mine = [cell for (_, each), cell in cells.items() if each == client]
        if not mine:
            continue
        # A client that cannot even send NOOP (or hangs) would fail or time out
        # in every scenario: find out once, quickly.  The floor knows no NOOP:
        # it sends a few small messages instead.
        check = "noop" if client in benchdefs.clients_for("noop") else "small"
        metrics, error = run_worker(
            client, check, sink.port, cpu, preflight, min(timeout, 30), env
        )
        if metrics is None:
            print(f"pre-flight check failed for {client}: {error}", flush=True)
            what = "NOOP" if check == "noop" else f"{check!r}"
            for cell in mine:
                cell.error = f"pre-flight {what} check failed: {error}"
    for repetition in range(params.repetitions):
        for scenario in scenarios:
            pairs = [client for (each, client) in cells if each == scenario]
            if not pairs:
                continue
            shift = repetition % len(pairs)
            order = pairs[shift:] + pairs[:shift]
            shown: list[str] = []
            metric, unit, scale = PROGRESS[scenario]
            for client in order:
                cell = cells[scenario, client]
                if cell.error is not None:
                    shown.append(f"{client} (failed)")
                    continue
                if not sink.alive():
                    print("smtp-sink died: restarting it", flush=True)
                    sink.stop()
                    sink.start()
                metrics, error = run_worker(
                    client, scenario, sink.port, cpu, params, timeout, env
                )
                if metrics is None:
                    cell.error = f"{error} (repetition {repetition + 1})"
                    shown.append(f"{client} ERROR")
                    continue
                cell.samples.append(metrics)
                value = metrics.get(metric)
                shown.append(
                    f"{client} {short(None if value is None else value * scale)}"
                )
            print(
                f"[{repetition + 1}/{params.repetitions}] {scenario} ({unit}): "
                + ", ".join(shown),
                flush=True,
            )
    return cells


# -- the table -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a metric of a scenario, shown with ``scale``."""

    key: str
    label: str
    scenario: str
    metric: str
    unit: str
    higher_is_better: bool
    scale: float = 1.0
    #: The scenario whose smtplib value the ratio is taken against.
    baseline: str | None = None
    ratios: bool = True


def table_rows(params: Params) -> list[Row]:
    size = f"{params.big_size / benchdefs.MIB:g} MiB"
    return [
        Row("small", "small messages, 1 conn", "small", "rate", "msg/s", True),
        Row(
            "rcpt100",
            f"1 msg to {params.rcpt_count} rcpts",
            "rcpt100",
            "rate",
            "msg/s",
            True,
        ),
        Row(
            "concurrent",
            f"{params.concurrent_connections} connections",
            "concurrent",
            "rate",
            "msg/s",
            True,
        ),
        Row("big-time", f"{size} as bytes: time", "big-bytes", "seconds", "s", False),
        Row(
            "big-rss",
            f"{size} as bytes: peak RSS+",
            "big-bytes",
            "rss_growth_mib",
            "MiB",
            False,
        ),
        Row(
            "big-file-time",
            f"{size} as file: time",
            "big-file",
            "seconds",
            "s",
            False,
            baseline="big-bytes",
        ),
        Row(
            "big-file-rss",
            f"{size} as file: peak RSS+",
            "big-file",
            "rss_growth_mib",
            "MiB",
            False,
            baseline="big-bytes",
        ),
        Row(
            "connect",
            "connect+EHLO+QUIT",
            "connect",
            "per_connection",
            "ms",
            False,
            scale=1000,
        ),
        Row("noop", "NOOP round trip", "noop", "per_call_us", "us", False),
        Row(
            "pool",
            f"{params.pool_messages:,} msgs, pool of {params.pool_connections}",
            "pool",
            "rate",
            "msg/s",
            True,
        ),
        Row(
            "hop",
            "sync call overhead",
            "hop",
            "hop_us",
            "us",
            False,
            ratios=False,
        ),
        Row(
            "portal-hop",
            "sync portal hop",
            "hop",
            "portal_hop_us",
            "us",
            False,
            ratios=False,
        ),
    ]


def ratio(value: float | None, against: float | None) -> float | None:
    if value is None or against is None or against == 0:
        return None
    return value / against


def build_table(
    cells: dict[tuple[str, str], Cell], params: Params, clients: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The table as data (for JSON), and the error footnotes."""
    footnotes: list[str] = []
    note_of: dict[tuple[str, str], int] = {}
    table: list[dict[str, Any]] = []
    for row in table_rows(params):
        if not any(scenario == row.scenario for scenario, _ in cells):
            continue
        baseline_cell = cells.get((row.baseline or row.scenario, "smtplib"))
        baseline = baseline_cell.median(row.metric) if baseline_cell else None
        line: dict[str, Any] = {
            "row": row.key,
            "label": row.label,
            "unit": row.unit,
            "higher_is_better": row.higher_is_better,
            "cells": {},
        }
        for client in clients:
            cell = cells.get((row.scenario, client))
            if cell is None:
                continue
            entry: dict[str, Any] = {"value": None, "ratio_vs_smtplib": None}
            if cell.error is not None and not cell.samples:
                key = (row.scenario, client)
                if key not in note_of:
                    footnotes.append(f"{client}, {row.scenario}: {cell.error}")
                    note_of[key] = len(footnotes)
                entry["error"] = cell.error
                entry["note"] = note_of[key]
            else:
                value = cell.median(row.metric)
                entry["value"] = None if value is None else value * row.scale
                if row.ratios:
                    entry["ratio_vs_smtplib"] = ratio(value, baseline)
            line["cells"][client] = entry
        asyncio_value = line["cells"].get("anysmtp-asyncio", {}).get("value")
        aiosmtplib_value = line["cells"].get("aiosmtplib", {}).get("value")
        line["anysmtp_asyncio_vs_aiosmtplib"] = (
            ratio(asyncio_value, aiosmtplib_value) if row.ratios else None
        )
        floor_value = line["cells"].get(benchdefs.FLOOR, {}).get("value")
        line["anysmtp_asyncio_vs_floor"] = ratio(asyncio_value, floor_value)
        table.append(line)
    return table, footnotes


def render_table(
    table: list[dict[str, Any]], footnotes: list[str], clients: Sequence[str]
) -> str:
    headings = {key: heading for key, heading, _ in benchdefs.CLIENTS}
    header = ["scenario", "unit", "better", *(headings[c] for c in clients)]
    header.append("asyncio/aio")
    # anysmtp on asyncio against the floor, where the floor took part.
    with_floor = any(benchdefs.FLOOR in line["cells"] for line in table)
    if with_floor:
        header.append("asyncio/floor")
    lines: list[list[str]] = []
    for line in table:
        cells: list[str] = [
            line["label"],
            line["unit"],
            "higher" if line["higher_is_better"] else "lower",
        ]
        for client in clients:
            entry = line["cells"].get(client)
            if entry is None:
                cells.append("n/a")
            elif "error" in entry:
                cells.append(f"ERROR [{entry['note']}]")
            else:
                text = short(entry["value"])
                if client != "smtplib" and entry["ratio_vs_smtplib"] is not None:
                    text += f" ({entry['ratio_vs_smtplib']:.2f}x)"
                cells.append(text)
        versus = line["anysmtp_asyncio_vs_aiosmtplib"]
        cells.append("-" if versus is None else f"{versus:.2f}x")
        if with_floor:
            versus = line["anysmtp_asyncio_vs_floor"]
            cells.append("-" if versus is None else f"{versus:.2f}x")
        lines.append(cells)
    widths = [
        max(len(row[index]) for row in [header, *lines]) for index in range(len(header))
    ]

    def fmt(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        parts.append(row[2].ljust(widths[2]))
        parts += [
            cell.rjust(width) for cell, width in zip(row[3:], widths[3:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [fmt(header), "  ".join("-" * width for width in widths)]
    out += [fmt(row) for row in lines]
    if footnotes:
        out.append("")
        out += [f"[{index}] {text}" for index, text in enumerate(footnotes, 1)]
    return "\n".join(out)


# -- the targets ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """``client``'s median over ``against``'s (or over the message size when
    ``against`` is ``"size"``) must be ``op`` ``threshold``."""

    goal: str
    scenario: str
    metric: str
    client: str
    against: str
    op: str
    threshold: float
    against_scenario: str | None = None


def targets() -> list[Target]:
    """The issue's targets (medians, same run)."""
    found = [
        Target(
            "small messages: async (asyncio) >= 1.5x smtplib's msg/s",
            "small",
            "rate",
            "anysmtp-asyncio",
            "smtplib",
            ">=",
            1.5,
        ),
        Target(
            "small messages: async (asyncio) >= 5x aiosmtplib's msg/s",
            "small",
            "rate",
            "anysmtp-asyncio",
            "aiosmtplib",
            ">=",
            5,
        ),
        Target(
            "small messages: sync facade >= 0.75x smtplib's msg/s",
            "small",
            "rate",
            "anysmtp-sync",
            "smtplib",
            ">=",
            0.75,
        ),
    ]
    for client in benchdefs.ANYSMTP_ASYNC_CLIENTS:
        found.append(
            Target(
                "100 recipients: async >= 5x smtplib's msg/s",
                "rcpt100",
                "rate",
                client,
                "smtplib",
                ">=",
                5,
            )
        )
    found.append(
        Target(
            "100 recipients: sync facade >= 3x smtplib's msg/s",
            "rcpt100",
            "rate",
            "anysmtp-sync",
            "smtplib",
            ">=",
            3,
        )
    )
    for client in benchdefs.ANYSMTP_ASYNC_CLIENTS:
        found.append(
            Target(
                "20 connections: async >= 2x smtplib's msg/s (20 threads)",
                "concurrent",
                "rate",
                client,
                "smtplib",
                ">=",
                2,
            )
        )
    for scenario, how in (("big-bytes", "bytes"), ("big-file", "file")):
        for client in benchdefs.ANYSMTP_CLIENTS:
            found.append(
                Target(
                    f"25 MiB ({how}): time <= 0.5x smtplib's",
                    scenario,
                    "seconds",
                    client,
                    "smtplib",
                    "<=",
                    0.5,
                    against_scenario="big-bytes",
                )
            )
    for scenario, how in (("big-bytes", "bytes"), ("big-file", "file")):
        for client in benchdefs.ANYSMTP_CLIENTS:
            found.append(
                Target(
                    f"25 MiB ({how}): peak RSS growth <= 0.5x the message size",
                    scenario,
                    "rss_growth_mib",
                    client,
                    "size",
                    "<=",
                    0.5,
                )
            )
    for client in benchdefs.ANYSMTP_ASYNC_CLIENTS:
        found.append(
            Target(
                "connect+EHLO+QUIT: async <= 1.5x smtplib's time per connection",
                "connect",
                "per_connection",
                client,
                "smtplib",
                "<=",
                1.5,
            )
        )
    return found


def check_targets(cells: dict[tuple[str, str], Cell]) -> list[dict[str, Any]]:
    checked: list[dict[str, Any]] = []
    for target in targets():
        cell = cells.get((target.scenario, target.client))
        if cell is None:
            continue  # not measured in this run (--only/--clients)
        value = cell.median(target.metric)
        if target.against == "size":
            against = cell.median("size_mib")
        else:
            other = cells.get(
                (target.against_scenario or target.scenario, target.against)
            )
            against = other.median(target.metric) if other else None
        measured = ratio(value, against)
        met: bool | None = None
        if measured is not None:
            met = (
                measured >= target.threshold
                if target.op == ">="
                else measured <= target.threshold
            )
        checked.append(
            {
                "goal": target.goal,
                "client": target.client,
                "scenario": target.scenario,
                "against": target.against,
                "op": target.op,
                "threshold": target.threshold,
                "ratio": measured,
                "met": met,
            }
        )
    return checked


def render_targets(checked: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for each in checked:
        status = {True: "MET", False: "MISSED", None: "NO DATA"}[each["met"]]
        measured = "-" if each["ratio"] is None else f"{each['ratio']:.2f}x"
        out.append(f"{status:<8} {each['goal']:<64} {each['client']:<16} {measured}")
    met = sum(1 for each in checked if each["met"] is True)
    missed = sum(1 for each in checked if each["met"] is False)
    unknown = sum(1 for each in checked if each["met"] is None)
    out.append(f"targets: {met} met, {missed} missed, {unknown} without data")
    return "\n".join(out)


# -- the machine -----------------------------------------------------------------


def _first_field(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def _os_release() -> str | None:
    try:
        with open("/etc/os-release", encoding="utf-8") as file:
            for line in file:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        return None
    return None


def _command_output(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> str | None:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env=env,
            cwd=cwd,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(usable_cpus: int) -> dict[str, Any]:
    memory = _first_field("/proc/meminfo", "MemTotal")
    return {
        "cpu_model": _first_field("/proc/cpuinfo", "model name")
        or platform.processor()
        or None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "memory": memory,
        "os": _os_release(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": {
            name: package_version(name)
            for name in ("anysmtp", "anyio", "aiosmtplib", "trio", "uvloop")
        },
        "postfix": _command_output(["dpkg-query", "-W", "-f=${Version}", "postfix"])
        or _command_output(["postconf", "-d", "-h", "mail_version"]),
    }


def anysmtp_source(env: dict[str, str]) -> dict[str, Any]:
    """Which anysmtp the workers import, and the state of its git tree."""
    # From the workers' directory, so that it resolves as they do (``-c`` puts
    # the working directory first on sys.path).
    found = _command_output(
        [sys.executable, "-c", "import anysmtp; print(anysmtp.__file__)"],
        env,
        cwd=BENCH_DIR,
    )
    source: dict[str, Any] = {"module": found}
    if found is None:
        return source
    package = Path(found).parent
    commit = _command_output(["git", "-C", str(package), "rev-parse", "HEAD"])
    if commit is not None:
        changes = _command_output(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."]
        )
        source["git_commit"] = commit
        source["uncommitted_changes"] = changes is not None
    return source


# -- the command line ------------------------------------------------------------


def choose_params(args: argparse.Namespace) -> Params:
    params = Params()
    scale = 1.0
    if args.quick:
        params = dataclasses.replace(params, repetitions=1, hop_blocks=3)
        scale = 0.2
    elif args.full:
        params = dataclasses.replace(params, repetitions=9)
        scale = 2.0
    scale *= float(os.environ.get("ANYSMTP_BENCH_SCALE", "1") or 1)
    if args.scale is not None:
        scale *= args.scale
    if scale != 1.0:
        params = params.scaled(scale)
    repetitions = args.reps or int(os.environ.get("ANYSMTP_BENCH_REPS", "0") or 0)
    if repetitions:
        params = dataclasses.replace(params, repetitions=repetitions)
    return params


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark anysmtp against smtplib and aiosmtplib on smtp-sink.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="1 repetition, counts x0.2 (smoke test)"
    )
    size.add_argument("--full", action="store_true", help="9 repetitions, counts x2")
    parser.add_argument("--reps", type=int, help="repetitions (default 5)")
    parser.add_argument("--scale", type=float, help="multiply the message counts")
    parser.add_argument(
        "--only",
        help="comma-separated scenarios: " + ",".join(SCENARIO_ORDER),
    )
    parser.add_argument(
        "--clients",
        help="comma-separated clients: " + ",".join(benchdefs.CLIENT_KEYS),
    )
    parser.add_argument("--cpu", type=int, help="the CPU to pin to (default: last)")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the sink and the clients"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60,
        help="seconds one measurement may take (default 60)",
    )
    parser.add_argument(
        "--anysmtp-src",
        type=Path,
        help="measure the anysmtp package in this directory (put on PYTHONPATH)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=BENCH_DIR / "results.json",
        help="where to write the results (default bench/results.json)",
    )
    return parser.parse_args(argv)


def selection(text: str | None, known: Sequence[str], what: str) -> list[str]:
    if not text:
        return list(known)
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}")
    return [item for item in known if item in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = choose_params(args)
    scenarios = selection(args.only, SCENARIO_ORDER, "scenarios")
    clients = selection(args.clients, benchdefs.CLIENT_KEYS, "clients")
    binary = find_smtp_sink()
    if binary is None:
        print(
            "bench: smtp-sink not found. It is part of Postfix: install the Debian "
            "package 'postfix' (make bench does when run as root).",
            file=sys.stderr,
        )
        return 2

    usable = sorted(os.sched_getaffinity(0))
    cpu = -1
    if not args.no_pin:
        cpu = args.cpu if args.cpu is not None else usable[-1]
        if len(usable) > 1:
            # Keep this driver off the benchmark's CPU.
            os.sched_setaffinity(0, set(usable) - {cpu})

    env = dict(os.environ)
    if args.anysmtp_src is not None:
        source_dir = str(args.anysmtp_src.resolve())
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (source_dir, env.get("PYTHONPATH", "")) if part
        )
    machine = describe_machine(len(usable))
    print(
        f"machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs "
        f"({machine['usable_cpus']} usable), Python {machine['python']}, "
        f"{machine['os']}"
    )
    pinning = f"CPU {cpu}" if cpu >= 0 else "not pinned"
    print(
        f"run: {params.repetitions} repetitions, clients interleaved, sink and "
        f"clients on {pinning}; counts: {params.small_messages} small messages, "
        f"{params.rcpt_messages} x {params.rcpt_count} recipients, "
        f"{params.concurrent_connections} x {params.concurrent_messages} concurrent, "
        f"{params.connects} connects, {params.pool_messages} through a pool of "
        f"{params.pool_connections}"
    )

    started = time.monotonic()
    with tempfile.TemporaryFile(prefix="smtp-sink-log-") as log:
        sink = Sink(binary, cpu, log)
        try:
            sink.start()
            print(
                f"smtp-sink: {' '.join(sink.command)} "
                f"(EHLO: {', '.join(sink.ehlo_features) or 'nothing'})",
                flush=True,
            )
            cells = run_all(sink, scenarios, clients, params, cpu, args.timeout, env)
        finally:
            sink.stop()
    duration = time.monotonic() - started

    table, footnotes = build_table(cells, params, clients)
    checked = check_targets(cells)
    print()
    legend = (
        f"Medians of {params.repetitions} runs; (N.NNx) = value / smtplib's value; "
        "asyncio/aio = anysmtp on asyncio / aiosmtplib"
    )
    if benchdefs.FLOOR in clients:
        descriptions = {key: text for key, _, text in benchdefs.CLIENTS}
        legend += (
            "; asyncio/floor = anysmtp on asyncio / the floor.\n"
            f"{descriptions[benchdefs.FLOOR]}, in "
            f"{' and '.join(sorted(benchdefs.FLOOR_SCENARIOS, reverse=True))} only"
        )
    print(legend + ".")
    print(render_table(table, footnotes, clients))
    print()
    print("Targets (docs/performance.md):")
    print(render_targets(checked))

    report = {
        "machine": machine,
        "run": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "duration_s": round(duration, 1),
            "params": dataclasses.asdict(params),
            "pinned_cpu": cpu,
            "sink": {
                "command": sink.command,
                "pinned_with": sink.pinned_with,
                "ehlo_features": sink.ehlo_features,
            },
            "anysmtp_source": anysmtp_source(env),
        },
        "clients": {key: text for key, _, text in benchdefs.CLIENTS},
        "scenarios": {key: benchdefs.SCENARIOS[key] for key in scenarios},
        "results": {
            scenario: {
                client: cell.to_json()
                for (each, client), cell in cells.items()
                if each == scenario
            }
            for scenario in scenarios
        },
        "table": table,
        "targets": checked,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json} ({duration:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
