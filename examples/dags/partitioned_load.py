"""Fan out over a list with dynamic task mapping, then fan back in.

One ``load_partition`` task instance per partition, each with its own
state, retries and log; ``summarize`` gets their return values in order.
"""

from datetime import datetime

from tether import dag, task


@dag(schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False, tags=["example"])
def partitioned_load():
    @task
    def list_partitions(ds=None) -> list[str]:
        partitions = [f"{ds}/region={region}" for region in ("eu", "us", "apac")]
        print(f"{len(partitions)} partitions for {ds}")
        return partitions

    @task(retries=2)
    def load_partition(partition: str, table: str) -> int:
        rows = 100 * (len(partition) % 7 + 1)
        print(f"loaded {rows} rows from {partition} into {table}")
        return rows

    @task
    def summarize(counts: list[int]) -> None:
        print(f"loaded {sum(counts)} rows from {len(counts)} partitions: {counts}")

    summarize(load_partition.partial(table="sales").expand(partition=list_partitions()))


partitioned_load()
