from datetime import timedelta

from tether import DAG, BashOperator

with DAG("flaky_retry"):
    BashOperator(
        task_id="fails_once",
        retries=1,
        retry_delay=timedelta(seconds=0),
        bash_command=(
            'if [ "$TETHER_TRY_NUMBER" = 1 ]; then echo "try 1 fails on purpose"; exit 1; fi; '
            'echo "try $TETHER_TRY_NUMBER succeeds"'
        ),
    )
