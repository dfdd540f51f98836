"""Envelope validation and serialisation speed against plain json.loads / json.dumps.

Usage: uv run python bench/envelope_codec.py [--events N] [--rounds R]

The documents are the catalogue's example events (every type, cycled), so the mix covers
small and large payloads. Each figure is the best of R rounds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from convohub.contracts import decode_event, encode_event, event_types
from convohub.contracts.catalogue import envelope_class, example_event, payload_class


def best_rate(label: str, operation: Callable[[], None], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - started)
    rate = count / best
    print(f"  {label:58} {rate:>12,.0f} events/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    samples = [example_event(t) for t in event_types()]
    events = [samples[i % len(samples)] for i in range(args.events)]
    documents = [encode_event(e) for e in events]
    parsed = [json.loads(d) for d in documents]
    typed = [
        (envelope_class(payload_class(e.type)), d) for e, d in zip(events, documents, strict=True)
    ]
    size = sum(map(len, documents)) / len(documents)
    print(f"{args.events:,} envelopes of {len(samples)} types, {size:.0f} bytes on average")

    n, r = args.events, args.rounds
    print("decode")
    loads = best_rate("baseline json.loads", lambda: [json.loads(d) for d in documents], n, r)
    hinted = best_rate(
        "model_validate_json, type known (ce_type header)",
        lambda: [cls.model_validate_json(d) for cls, d in typed],
        n,
        r,
    )
    lookup = best_rate(
        "decode_event, type read from the document",
        lambda: [decode_event(d) for d in documents],
        n,
        r,
    )
    print("encode")
    dumps = best_rate("baseline json.dumps", lambda: [json.dumps(p) for p in parsed], n, r)
    dump = best_rate("model_dump_json", lambda: [e.model_dump_json() for e in events], n, r)
    checked = best_rate(
        "encode_event (type check + model_dump_json)",
        lambda: [encode_event(e) for e in events],
        n,
        r,
    )
    print("ratios against the raw baseline of the same run (1.00 = as fast as plain json)")
    print(f"  validate, type known   {hinted / loads:5.2f}")
    print(f"  validate, type lookup  {lookup / loads:5.2f}")
    print(f"  serialise              {dump / dumps:5.2f}")
    print(f"  encode_event           {checked / dumps:5.2f}")


if __name__ == "__main__":
    main()
