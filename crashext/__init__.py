"""crash front end: ``extend <checkout>/crashext/xenscope.so`` in the crash utility.

``xenscope.c`` is the bridge (a crash extension embedding Python); it calls :mod:`.boot` to find
the venv and :mod:`.front` to run ``xen SUBCOMMAND ...``. :mod:`.target` reads through crash's
``readmem()``; :mod:`.kernel` gives the kernel commands crash's types. No analysis lives here.
Never imported outside crash (it needs the ``_crash`` module the bridge creates).
"""
