"""One contender's turn on a fresh broker: warm-up, throughput, latency at `--rate`, half load."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from etong.devkit.mosquitto import LocalMosquitto

from e2e.contender import Contender
from e2e.errors import BenchError
from e2e.lineup import Kind
from e2e.measures import BatchTotals, CpuMeter, ForeignLoad, RssSampler, mosquitto_pid
from e2e.plan import Plan, Settings
from e2e.publisher import Publisher
from e2e.stats import percentile
from e2e.terminals import Terminals


@dataclass
class Round:
    """The processes of one round, wired together."""

    name: str
    receipts: bool
    settings: Settings
    plan: Plan
    terminals: Terminals
    publisher: Publisher
    contender: Contender
    broker_pid: int | None

    def store_pids(self) -> list[int]:
        """The PostgreSQL server's processes working for the contender now ([] on SQLite)."""
        if self.contender.store_pids is None:
            return []
        backends, background = self.contender.store_pids()
        return backends + background

    def our_pids(self) -> list[int | None]:
        """Every process of the round: contender, broker, this process, the publisher, and
        the PostgreSQL server's for a contender on it."""
        own = [self.broker_pid, os.getpid(), self.publisher.pid]
        return [*self.contender.pids, *own, *self.store_pids()]

    def why(self) -> str:
        """What was seen, for a failure message."""
        return f"{self.terminals.describe()}\n--- contender log tail ---\n{self.contender.log()}"

    def wait_for(self, phase: str, ids: Sequence[str], timeout: float) -> None:
        """Wait until every report of `phase` was pushed (and, with receipts, received)."""
        waits = [self.terminals.pushes]
        if self.receipts:
            waits.append(self.terminals.received)
        deadline = time.monotonic() + timeout
        for arrivals in waits:
            arrivals.expect(ids)
            # In slices, so that a contender that died is reported at once, not at the deadline.
            while not arrivals.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
                code = self.contender.exit_code()
                if code is not None:
                    raise BenchError(
                        f"{self.name} {phase}: the contender exited with code {code}; "
                        f"{arrivals.progress()}; {self.why()}"
                    )
                if time.monotonic() >= deadline:
                    raise BenchError(
                        f"{self.name} {phase}: {arrivals.progress()} within {timeout:.0f} s; "
                        f"{self.why()}"
                    )

    def warm_up(self) -> None:
        """Connections, caches and the store's first pages, before anything is timed."""
        timeout = self.settings.phase_timeout_s
        self.publisher.run("warmup", None, timeout)
        self.wait_for("warmup", self.plan.ids("warmup"), timeout)

    def throughput(self) -> dict[str, Any]:
        """N reports at once: throughput, lifecycle throughput, CPU per report."""
        timeout = self.settings.phase_timeout_s
        contender = CpuMeter(lambda: self.contender.pids)
        broker = CpuMeter(lambda: [self.broker_pid])
        harness = CpuMeter(lambda: [os.getpid(), self.publisher.pid])
        store = self.contender.store_pids
        backends = CpuMeter(lambda: store()[0] if store else [])
        background = CpuMeter(lambda: store()[1] if store else [])
        batches0 = self.contender.batches() if self.contender.batches else None
        foreign = ForeignLoad(self.our_pids)
        sent_at, last_puback = self.publisher.run("throughput", None, timeout)
        ids = self.plan.ids("throughput")
        self.wait_for("throughput", ids, timeout)
        n = len(ids)
        first_send = min(sent_at)
        last_push = max(self.terminals.pushes.first[e] for e in ids)
        cpu = {
            "cpu_ms_per_event": contender.seconds(),
            "broker_cpu_ms_per_event": broker.seconds(),
            "harness_cpu_ms_per_event": harness.seconds(),
        }
        if store is not None:
            cpu["pg_backends_cpu_ms_per_event"] = backends.seconds()
            cpu["pg_background_cpu_ms_per_event"] = background.seconds()
        wall = foreign.wall()
        out = {
            "events_per_s": n / (last_push - first_send),
            **{key: seconds * 1000 / n for key, seconds in cpu.items()},
            "publish_events_per_s": n / (last_puback - first_send),
            "throughput_s": last_push - first_send,
            "foreign_cpu_share": foreign.share(),
            # Contender, broker, load generator (and the PostgreSQL server) together, over the
            # phase's wall time and every core: near 1.0, the machine itself is the limit.
            "machine_busy_share": sum(cpu.values()) / (wall * (os.cpu_count() or 1)),
        }
        if self.receipts:
            last_received = max(self.terminals.received.first[e] for e in ids)
            out["lifecycle_events_per_s"] = n / (last_received - first_send)
        if batches0 is not None:
            out.update(self.batch_figures(batches0, stages=False))
        return out

    def batch_figures(self, before: BatchTotals, *, stages: bool) -> dict[str, float]:
        """Since `before`, from one read of etong's /metrics: inbound messages (reports and
        acks) per store transaction and, with `stages`, the mean milliseconds a batch spent
        in each stage (`etong_batch_stage_seconds`; summed over instances)."""
        assert self.contender.batches is not None
        now = self.contender.batches()
        out = {"mean_batch_messages": now.mean_batch_since(before)}
        if stages:
            for stage, ms in now.stage_ms_since(before).items():
                out[f"stage_{stage}_ms"] = ms
        return out

    def latency(self, phase: str, rate: float, count: int | None = None) -> dict[str, Any]:
        """Reports paced at `rate`: publish-to-push (and to `received`) latency percentiles.
        Keys as for `--rate`, prefixed `half_` for the phase at half the throughput."""
        timeout = count / rate if count else self.settings.latency_s
        timeout += self.settings.phase_timeout_s
        batches0 = self.contender.batches() if self.contender.batches else None
        foreign = ForeignLoad(self.our_pids)
        sent_at, _ = self.publisher.run(phase, rate, timeout, count)
        ids = self.plan.ids(phase, count)
        self.wait_for(phase, ids, timeout)
        foreign_share = foreign.share()
        pushes = self.terminals.pushes.first
        latencies = [(pushes[e] - t) * 1000 for e, t in zip(ids, sent_at, strict=True)]
        paced_s = max(1e-9, max(sent_at) - min(sent_at))
        out = {
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies),
            "paced_events_per_s": len(ids) / paced_s,
            "foreign_cpu_share": foreign_share,
        }
        if self.receipts:
            received = self.terminals.received.first
            lifecycle = [(received[e] - t) * 1000 for e, t in zip(ids, sent_at, strict=True)]
            out["received_p50_ms"] = percentile(lifecycle, 50)
            out["received_p99_ms"] = percentile(lifecycle, 99)
        if batches0 is not None:
            out.update(self.batch_figures(batches0, stages=phase != "latency"))
        if phase == "latency":
            out["latency_foreign_cpu_share"] = out.pop("foreign_cpu_share")
            if "mean_batch_messages" in out:
                out["latency_mean_batch_messages"] = out.pop("mean_batch_messages")
            return out
        out["rate_events_per_s"] = rate
        out["paced_s"] = paced_s
        return {f"half_{key}": value for key, value in out.items()}

    def half_load(self, throughput: Mapping[str, Any]) -> dict[str, Any]:
        """Latency at half the throughput this contender just measured (its lifecycle's, when
        it sends receipts): the same load relative to what it can take, on any machine. The
        phase lasts `--latency-s`, or until it used its `--events` reports (so at most twice
        the throughput phase), whichever comes first."""
        rate = 0.5 * throughput["lifecycle_events_per_s" if self.receipts else "events_per_s"]
        pool = len(self.plan.phases["half"])
        count = min(pool, max(1, round(rate * self.settings.latency_s)))
        return self.latency("half", rate, count)


def run_round(name: str, kind: Kind, settings: Settings, plan: Plan) -> dict[str, Any]:
    """One round of one contender on a fresh broker."""
    round_dir = settings.workdir / name
    round_dir.mkdir(parents=True)
    stop_info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        broker = LocalMosquitto(round_dir / "mosquitto")
        broker.start()
        stack.callback(broker.kill)
        terminals = Terminals(broker.url, settings.protocol, plan.roster)
        stack.callback(terminals.close)
        terminals.connect()
        publisher = Publisher(broker.url, settings.protocol, settings.publishers, plan.phases)
        stack.callback(publisher.stop)
        publisher.start()
        load_before = os.getloadavg()[0]
        contender = kind.start(broker.url, settings, plan, round_dir)
        stack.callback(lambda: stop_info.update(contender.stop()))
        bench_round = Round(
            name,
            kind.receipts,
            settings,
            plan,
            terminals,
            publisher,
            contender,
            mosquitto_pid(broker),
        )
        with RssSampler(*contender.pids) as rss:
            bench_round.warm_up()
            throughput = bench_round.throughput()
            result = {
                "round": name,
                **contender.info,
                **throughput,
                **bench_round.latency("latency", settings.rate),
                **bench_round.half_load(throughput),
            }
        result["rss_mb"] = rss.peak_mb
        result["repeated_pushes"] = terminals.pushes.repeats
        result["receipts"] = dict(terminals.statuses)
        result["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result.update(stop_info)
    return result
