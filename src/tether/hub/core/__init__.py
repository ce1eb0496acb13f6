"""The domain core: runs and their task instances, claims and attempts, worker
sessions, limits, assets, schedules, operator actions, credentials, secrets at
rest and the audit log.

Every function here works inside the caller's transaction (a SQLAlchemy
``Session``) and imports only the store below it; the services beside the APIs
(``hub/services``) and the two APIs (``hub/api``, ``hub/worker_api``) call it.
``tests/unit/test_layers.py`` keeps it that way.
"""
