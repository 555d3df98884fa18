"""First Python the crash bridge runs: make the venv visible, then import :mod:`crashext.front`.

Standard library only until the venv is on ``sys.path``. ``load()`` returns the front module, or
one sentence saying why xenscope cannot load (the bridge prints it and keeps crash running).
"""


def load(checkout):
    from xenstructs.venv import activate, fix_hint
    why = activate(checkout)
    if why:
        return f"{why}; {fix_hint(checkout)}, then extend again"
    try:
        import _crash
        from . import front
        front.attach(_crash)
    except Exception as e:          # never a traceback at load time
        return f"loading failed: {type(e).__name__}: {e}"
    return front
