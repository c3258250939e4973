"""PySpark word count, the peer for `cairn mr run --app wc` in scripts/bench-mr.

Words are runs of letters, as in cairn's wc (Python's [^\\W\\d_]+ is the
letters of Unicode). Prints the job time measured inside the driver (JVM
start excluded) on stdout as `job_seconds=<s>`.
"""

import re
import sys
import time
from operator import add

from pyspark.sql import SparkSession

WORD = re.compile(r"[^\W\d_]+")


def main() -> None:
    master, output, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    spark = (
        SparkSession.builder.master(master)
        .appName("cairn-bench-wordcount")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    start = time.monotonic()
    lines = spark.sparkContext.textFile(",".join(inputs))
    counts = lines.flatMap(WORD.findall).map(lambda word: (word, 1)).reduceByKey(add)
    counts.map(lambda pair: f"{pair[0]} {pair[1]}").saveAsTextFile(output)
    print(f"job_seconds={time.monotonic() - start:.3f}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
