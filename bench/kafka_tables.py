"""The Kafka -> Arrow table path alone: the 1M-word count of compare_peers.py from Kafka, two ways, in one run.

    .venv/bin/python bench/kafka_tables.py [--words 1000000] [--runs 5]

Both jobs are `bench/_peers_side.py`'s streamkeep "table API" word count (pyarrow split,
``aggregate_state(count, emit="changed")``, a checkpoint every batch of 10k lines, 4
partitions), each run in a fresh process reading the same topic from the earliest offset
on librdkafka's mock broker (``tests/_kafka_mock.py``, 127.0.0.1), runs alternating:

* ``tables="string"``: the source builds each partition's values of a batch into one
  Arrow string column (no KafkaRecord, no Python call per record; docs/tables.md);
* ``records -> to_tables``: the record path: a ``value_deserializer`` decoding each value,
  a KafkaRecord per line, ``map`` to its value, then ``to_tables`` (how the job read
  Kafka before ``tables=``).

Prints wall time and the child's CPU time of the timed loop (process time: all its
threads, librdkafka's included), medians with min-max, and the ratios of the medians.
On a loaded machine the CPU ratio is the steadier one. compare_peers.py gives the
Bytewax ratio of the same job.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import _common as C  # noqa: E402
import compare_peers as CP  # noqa: E402
import compare_pyspark as P  # noqa: E402

VARIANTS = {"tables-via-records": 'records -> to_tables', "tables": 'tables="string"'}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--words", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    from _kafka_mock import KafkaMockProcess

    CP.precompile()
    runner = CP.Runner({CP.SK: P.streamkeep_python(None)}, Path(tempfile.mkdtemp(prefix="sk-kafka-tables-")))
    kafka = KafkaMockProcess(brokers=1)
    try:
        kafka.create_topic("words", CP.PARTITIONS)
        CP.produce_lines(kafka.bootstrap, "words", C.make_lines(args.words, 10_000))
        got: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in VARIANTS}
        for i in range(args.runs):
            for variant in VARIANTS:
                p = {"bootstrap": kafka.bootstrap, "topic": "words", "partitions": CP.PARTITIONS, "batch_lines": 10_000,
                     "lines": args.words // C.WORDS_PER_LINE, "interval_s": 1.0, "variant": variant}
                res = runner.result(CP.SK, "throughput_kafka", p, timeout_s=600)
                if "seconds" not in res:
                    CP.say(f"run {i + 1} {variant}: {res.get('error')}")
                    return 1
                got[variant]["wall"].append(res["seconds"])
                got[variant]["cpu"].append(res["cpu_s"])
                CP.say(f"run {i + 1} {VARIANTS[variant]:<22} {res['seconds']:.3f} s wall, {res['cpu_s']:.3f} s CPU, {res['outputs']} outputs")
    finally:
        kafka.close()

    def cell(xs: list[float]) -> str:
        return f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"

    print(f"\n{args.words:,} words from Kafka ({CP.PARTITIONS} partitions, 10 batches), table word count, {args.runs} alternating runs; median (min-max)")
    print(f"{'variant':<24}{'wall':<28}{'CPU (all threads)':<28}words/s (median wall)")
    for variant, label in VARIANTS.items():
        w, c = got[variant]["wall"], got[variant]["cpu"]
        print(f"{label:<24}{cell(w):<28}{cell(c):<28}{args.words / statistics.median(w):,.0f}")
    old, new = got["tables-via-records"], got["tables"]
    print(f'tables="string" vs records -> to_tables: {statistics.median(old["wall"]) / statistics.median(new["wall"]):.2f}x wall, '
          f'{statistics.median(old["cpu"]) / statistics.median(new["cpu"]):.2f}x CPU (> 1: tables= is faster)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
