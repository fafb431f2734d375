"""Producer pacing and throughput against the real Kafka: requested vs achieved records/s.

    python -m benchmarks.producer_rate [--seconds S] [--rates 10,100,1000,10000,max]

For each requested rate, synthetic traffic is sent for S seconds (10/s gets at least 10 s)
to a throw-away topic, then flushed. "achieved" is records handed to the producer per second
of sending (the pace consumers see); "acked/s" also counts the wait for the last acks.
"worst 1 s" is the largest deviation of any whole 1-second window from the requested rate.
When ``../shared/data/wttj/`` is present, it also times the import of the 5069-offer file
(parse + send + every ack, in process and as a CLI run). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import bisect
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import NewTopic

from jobpulse import settings as settings_module
from jobpulse import topics
from jobpulse.producer.csv_import import CsvRow, decode_lines, read_rows
from jobpulse.producer.delivery import OfferSender, Outcome, pump
from jobpulse.producer.places import load_places
from jobpulse.producer.synthetic import SyntheticStream
from jobpulse.settings import Settings

JOBS_CSV = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "wttj"
    / "technical-test-jobs.csv"
)


class Samples:
    """Progress sink recording (time, records sent) after every chunk; prints nothing."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.sent: list[int] = []

    def start(self, total: int | None) -> None:
        self.times.append(time.monotonic())
        self.sent.append(0)

    def update(self, sent: int, delivered: int, failed: int) -> None:
        self.times.append(time.monotonic())
        self.sent.append(sent)

    def finish(self) -> None:
        pass

    def sent_at(self, moment: float) -> int:
        return self.sent[max(0, bisect.bisect_right(self.times, moment) - 1)]

    def worst_second(self, rate: float) -> float:
        """The largest relative deviation from ``rate`` over the whole 1-second windows."""
        start, end = self.times[0], self.times[-1]
        windows = int(end - start)
        deviations = [
            abs(self.sent_at(start + k + 1) - self.sent_at(start + k) - rate) / rate
            for k in range(windows)
        ]
        return max(deviations, default=float("nan"))


def one_rate(settings: Settings, rate: float | None, seconds: float) -> tuple[Outcome, Samples]:
    sender = OfferSender(settings)
    sender.check_topic()
    stream = (r.offer for r in SyntheticStream(load_places(), seed=1))
    samples = Samples()
    outcome = pump(stream, sender, rate=rate, duration=seconds, progress=samples)
    return outcome, samples


def csv_import(settings: Settings) -> tuple[int, float, float]:
    """(rows, parse seconds, total seconds) for the public jobs file."""
    began = time.perf_counter()
    with JOBS_CSV.open("rb") as stream:
        offers = [i.offer for i in read_rows(decode_lines(stream)) if isinstance(i, CsvRow)]
    parsed = time.perf_counter()
    sender = OfferSender(settings)
    sender.check_topic()
    outcome = pump(offers, sender, progress=Samples())
    assert outcome.delivered == len(offers), outcome
    return len(offers), parsed - began, time.perf_counter() - began


def csv_import_cli(settings: Settings) -> float:
    """Wall time of ``python -m jobpulse produce --csv`` on the public jobs file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env["JOBPULSE_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env["JOBPULSE_OFFERS_TOPIC"] = settings.offers_topic
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "jobpulse", "produce", "--csv", str(JOBS_CSV)],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="sending time per rate")
    parser.add_argument("--rates", default="10,100,1000,10000,max")
    args = parser.parse_args()
    base = settings_module.load()
    settings = base.with_overrides(offers_topic=f"bench-{uuid.uuid4().hex[:8]}.offers")
    admin = topics.admin_client(settings)
    admin.create_topics([NewTopic(settings.offers_topic, settings.partitions, 1)])[
        settings.offers_topic
    ].result(timeout=30)
    load_places()  # not part of the measurement
    try:
        print(f"producer → {settings.kafka_display} {settings.offers_topic}")
        print(
            f"{'requested/s':>12} {'achieved/s':>12} {'error':>8} {'worst 1 s':>10} "
            f"{'acked/s':>10} {'records':>9}"
        )
        for raw in args.rates.split(","):
            rate = None if raw.strip() == "max" else float(raw)
            seconds = max(args.seconds, 10.0) if rate is not None and rate <= 10 else args.seconds
            outcome, samples = one_rate(settings, rate, seconds)
            error = f"{100 * (outcome.rate - rate) / rate:+.2f}%" if rate else "-"
            worst = f"{100 * samples.worst_second(rate):.1f}%" if rate else "-"
            print(
                f"{raw.strip():>12} {outcome.rate:>12,.1f} {error:>8} {worst:>10} "
                f"{outcome.throughput:>10,.0f} {outcome.produced:>9}"
                + (f"  ({outcome.not_delivered} failed)" if outcome.not_delivered else "")
            )
        if JOBS_CSV.is_file():
            rows, parse_s, total_s = csv_import(settings)
            print(
                f"CSV import {JOBS_CSV.name}: {rows} offers in {total_s:.2f}s "
                f"(parse {parse_s:.2f}s, send + acks {total_s - parse_s:.2f}s); "
                f"`jobpulse produce --csv` wall time incl. interpreter start "
                f"{csv_import_cli(settings):.2f}s"
            )
    finally:
        topics.delete_topics(settings, [settings.offers_topic])


if __name__ == "__main__":
    main()
