"""docs/api.md from xenstructs/api.py: every function's signature and docstring (exactly as
``help()`` shows it), its example (docs/examples/NAME.py) and the output of that example run now
on the bundled core; then the classes the functions return, with their public methods.

Called by docs/generate.py (``--check`` included), which writes docs/api.md.
"""
import inspect
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
EXAMPLES = os.path.join(HERE, "examples")


def _signature(name, obj):
    try:
        return f"{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        return name


def _docstring(obj):
    return inspect.getdoc(obj) or "(no docstring)"


def run_example(name):
    """The standard output of docs/examples/NAME.py run from the checkout's top, this checkout's
    library first on the path (the tests run it the same way)."""
    env = dict(os.environ, PYTHONPATH=TOP + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="100")
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, f"{name}.py")], capture_output=True, text=True,
                       cwd=TOP, env=env, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"docs/examples/{name}.py failed: {r.stderr.strip()[-2000:]}")
    return r.stdout.rstrip()


def _function(name, obj):
    with open(os.path.join(EXAMPLES, f"{name}.py")) as f:
        example = f.read().rstrip()
    return [f"### {name}", "", "```python", _signature(name, obj), "```", "", "```text", _docstring(obj), "```", "",
            f"Example (`docs/examples/{name}.py`, run from the checkout's top):", "", "```python", example, "```",
            "", "Its output:", "", "```text", run_example(name), "```", ""]


def _public_methods(cls):
    out = []
    for name, member in sorted(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            doc = (inspect.getdoc(member) or "").split("\n\n")[0].replace("\n", " ")
            out.append(f"- `{name}` (property){': ' + doc if doc else ''}")
        elif inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod)):
            func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            doc = (inspect.getdoc(func) or "").split("\n\n")[0].replace("\n", " ")
            out.append(f"- `{_signature(name, func)}`{': ' + doc if doc else ''}")
    return out


def _class(name, cls):
    out = [f"### {name}", "", "```text", _docstring(cls), "```", ""]
    fields = getattr(cls, "__dataclass_fields__", None)
    if fields:
        out += ["Fields: " + ", ".join(f"`{f}`" for f in fields), ""]
    methods = _public_methods(cls)
    if methods:
        out += methods + [""]
    return out


def api_md():
    """The text of docs/api.md."""
    sys.path.insert(0, TOP)
    from xenstructs import api
    out = ["# Scripting API", "",
           "Generated from the docstrings of `xenstructs/api.py` by `docs/generate.py`; every example is",
           "`docs/examples/NAME.py`, run on a bundled core to make the output shown here, and run again by",
           "`tests/test_api_examples.py`, which checks what it computed against the core's manifest.",
           "Do not edit by hand.", "", "```text", _docstring(api), "```", "", "## Functions", ""]
    out += [f"- [`{name}`](#{name})" for name in api.FUNCTIONS] + [""]
    for name in api.FUNCTIONS:
        out += _function(name, getattr(api, name))
    out += ["## Classes", ""]
    for name in api.CLASSES:
        out += _class(name, getattr(api, name))
    return "\n".join(out).rstrip()
