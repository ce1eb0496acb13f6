"""Secrets at rest on the hub: its encryption keys and the connections and variables
encrypted with them."""
