"""The hub: API, scheduler, dag processor and metadata store (extra ``tether[hub]``)."""
