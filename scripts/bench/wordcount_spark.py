#!/usr/bin/env python3
"""PySpark word count: the "popular framework" baseline for `cairn mr run --app wc`.

    wordcount_spark.py [--master local[2]] [--output FILE] FILES...

Run it with a Python that has `pyspark` installed (scripts/bench-mr makes a
venv at target/bench-mr/venv) and JAVA_HOME pointing at a JDK 17+.

The job is the textbook RDD word count, written the way a Spark user would:

    textFile -> flatMap(split into words) -> map((w, 1)) -> reduceByKey(add)

reduceByKey combines map-side (per partition) before the shuffle, like the
combiner of `cairn mr --app wc`. Words are maximal runs of Unicode letters
(`[^\\W\\d_]+`), case kept: the same tokenisation as Cairn's `wc` app
(Rust `char::is_alphabetic`), up to rare code points (Python counts `No`
numerics such as '½' as word characters, Rust counts some combining marks).

The counts are collected to the driver (the result is small: one pair per
distinct word) and, with --output, written as `word count` lines sorted by
word — the format of `cairn mr seq` — so outputs can be compared.

Prints to stdout one line of `key=value` fields, for scripts:

    spark_wordcount master=local[2] files=16 bytes=... distinct=... words=...
        startup_seconds=... job_seconds=... total_seconds=...

startup_seconds is SparkSession creation (JVM start, py4j gateway);
job_seconds is from textFile to the collected result (and the output file
written); total_seconds is both plus session stop. The process wall time seen
from outside also includes the Python interpreter and pyspark imports.
"""

import argparse
import os
import re
import sys
import time
from operator import add

# Unicode letters: not (non-word or digit or underscore).
WORD = re.compile(r"[^\W\d_]+")


def words(line):
    return WORD.findall(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--driver-memory", default="2g",
                        help="spark.driver.memory; in local mode the driver is also the executor (default 2g)")
    parser.add_argument("--output", help="write sorted `word count` lines to this file")
    parser.add_argument("files", nargs="+", help="input text files")
    args = parser.parse_args()

    paths = [os.path.abspath(f) for f in args.files]
    for path in paths:
        if not os.path.isfile(path):
            sys.exit(f"wordcount_spark.py: input {path} is not a file")
    total_bytes = sum(os.path.getsize(p) for p in paths)

    # The workers must run the same Python as the driver (the venv's).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    started = time.perf_counter()
    from pyspark.sql import SparkSession  # import inside the timing: part of startup

    spark = (
        SparkSession.builder.master(args.master)
        .appName("cairn-bench-wordcount")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    session_ready = time.perf_counter()

    counts = (
        sc.textFile(",".join(paths))
        .flatMap(words)
        .map(lambda word: (word, 1))
        .reduceByKey(add)
        .collect()
    )
    if args.output:
        # Byte order (UTF-8), like LC_ALL=C sort and Rust's sort of &[u8].
        counts.sort(key=lambda pair: pair[0].encode("utf-8"))
        with open(args.output, "w", encoding="utf-8") as out:
            for word, count in counts:
                out.write(f"{word} {count}\n")
    job_done = time.perf_counter()

    partitions = sc.defaultParallelism
    spark.stop()
    stopped = time.perf_counter()

    print(
        "spark_wordcount"
        f" master={args.master}"
        f" parallelism={partitions}"
        f" files={len(paths)}"
        f" bytes={total_bytes}"
        f" distinct={len(counts)}"
        f" words={sum(count for _, count in counts)}"
        f" startup_seconds={session_ready - started:.3f}"
        f" job_seconds={job_done - session_ready:.3f}"
        f" total_seconds={stopped - started:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
