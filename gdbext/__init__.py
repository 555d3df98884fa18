"""gdb front end of xenscope: ``source <checkout>/gdbext/xenscope.py`` in gdb.

Only adapts input (arguments, gdb expressions, the inferior) and output (gdb.write, gdb errors);
every analysis lives in :mod:`xenstructs`.
"""
