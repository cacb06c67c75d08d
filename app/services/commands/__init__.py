"""Commands to devices, one module per stage: submit, acks, waiters, sweeps (the relay), messages (reads).

Every SQL statement about commands (API and relay) lives in this package.
"""
