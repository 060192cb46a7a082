"""gdb-side code of the kgdb role: session schema (plain Python) and the runner (imports ``gdb``)."""
