from tether import DAG, BashOperator, EmptyOperator

with DAG("always_fails"):
    BashOperator(task_id="boom", bash_command="echo 'about to fail'; exit 3") >> EmptyOperator(
        task_id="after"
    )
