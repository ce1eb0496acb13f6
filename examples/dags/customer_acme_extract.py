"""Extract a customer's data next to the data: every task runs on the
``customer-acme`` queue, so only a worker enrolled for that customer takes it."""

from datetime import datetime, timedelta

from tether import DAG, BashOperator, PythonOperator


def summarize(ti):
    rows = int(ti.xcom_pull(task_ids="extract_orders"))
    print(f"acme: {rows} order rows extracted in run {ti.run_id}")
    return {"customer": "acme", "rows": rows}


with DAG(
    "customer_acme_extract",
    description="Nightly order extract inside ACME's network",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["customer", "acme"],
    default_args={"queue": "customer-acme", "retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:
    check_source = BashOperator(
        task_id="check_source",
        bash_command='echo "acme source reachable from $(hostname)"',
    )
    extract_orders = BashOperator(
        task_id="extract_orders",
        bash_command='printf "order-1\\norder-2\\norder-3\\n" > orders.csv && wc -l < orders.csv',
    )
    report = PythonOperator(task_id="summarize", python_callable=summarize)

    check_source >> extract_orders >> report
