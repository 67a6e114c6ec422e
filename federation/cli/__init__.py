"""The ``gns`` command line: argument parsing and output only; every command calls
:class:`federation.client.Client` (or the local runner) and prints what it returns."""
