"""What runs beside the APIs in the hub process: the scheduler loop, the dag
processor (with its parse children and the bundles it packs), DAG callbacks,
and housekeeping (``tether db clean``). Services call the domain core and the
store, never the APIs."""
