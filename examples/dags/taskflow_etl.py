"""A TaskFlow ETL: return values travel between tasks as arguments."""

from datetime import datetime

from tether import dag, task


@dag(schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False, tags=["example"])
def taskflow_etl():
    @task
    def extract() -> dict:
        orders = {"1001": 301.27, "1002": 433.21, "1003": 502.22}
        print(f"extracted {len(orders)} orders")
        return orders

    @task
    def transform(orders: dict) -> dict:
        total = round(sum(orders.values()), 2)
        print(f"total order value {total}")
        return {"total_order_value": total, "count": len(orders)}

    @task
    def load(summary: dict) -> None:
        print(f"loaded summary: total={summary['total_order_value']} count={summary['count']}")

    load(transform(extract()))


taskflow_etl()
