import os

from tether import DAG, PythonOperator


def report():
    print(f"DAG_FILE={__file__}")
    print(f"CWD={os.getcwd()}")


with DAG("where_am_i"):
    PythonOperator(task_id="report", python_callable=report)
