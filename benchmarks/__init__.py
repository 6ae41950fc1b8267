"""Benchmarks of hiveloop_async against the CPython floor and its peers.

Every module here that a peer's process imports (``_harness``, ``worker`` and the
``sdk_*`` module of that peer) uses the standard library only: the peers run in their own
virtual environment (``benchmarks/.peers-venv``) where neither hiveloop_async nor its
dependencies are installed.
"""
