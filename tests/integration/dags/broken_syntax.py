from tether import DAG

with DAG("never_loads") as dag:
    def oops(:
        pass
