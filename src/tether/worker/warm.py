"""Imported by the worker's fork server before it forks tasks: what a task would
otherwise pay for on its first read of a connection or variable (importing
httpx and its transports, loading the default CA bundle) is done once, and
every forked task shares it. Spawned tasks pay it themselves, when they read."""

from tether.sdk import secrets

secrets.warm()
