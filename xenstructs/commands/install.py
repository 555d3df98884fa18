"""``gdbinit`` and ``crash-extension``: load an installed xenscope (a wheel, no checkout) into gdb and crash.

Both print the line to give the debugger first, then ``#`` comments (gdb and crash skip them, so
``xenscope gdbinit >> ~/.gdbinit`` works). The work is :mod:`xenstructs.install`'s.
"""

from . import arg, command


def _comment(lines):
    return [f"# {x}" if x else "#" for x in lines]


def _render_gdbinit(r, args):
    out = [r["line"], "# put the line above in ~/.gdbinit, or type it at gdb's prompt"]
    out += _comment([f"xenscope: {r['root']} (Python {r['python']}, {r['python_executable']}); "
                     f"dependencies from {r['venv_source']}"])
    gdb = r["gdb"]
    if r["loads"]:
        out += _comment([f"checked: {gdb['gdb']} (its Python {gdb['version']}) loads it and registers `xen`"])
    elif r["why"]:
        out += _comment([f"gdb cannot load it: {r['why']}"])
    if r["fix"] and not r["checkout"]:
        out += _comment(["gdb embeds /usr/bin/python3; Debian's pip refuses to install into it (PEP 668: "
                         "externally-managed-environment), so install xenscope into a venv made from it "
                         "(--system-site-packages keeps Debian's python3-libkdumpfile visible):"]
                        + [f"  {c}" for c in r["fix"]])
    elif r["fix"]:
        out += _comment([f"in this checkout run: {r['fix'][0]}"])
    return "\n".join(out)


@command("gdbinit", "Print the line that loads this xenscope into gdb's own Python (for ~/.gdbinit), and check "
                    "it in a throw-away gdb: when gdb's Python cannot see the package, say why and print the "
                    "commands that install it where gdb can (a venv made from /usr/bin/python3). Exit 1 when "
                    "gdb cannot load it.",
         target=None, cli_only=True, status=lambda r: 1 if r["loads"] is False or r["why"] else 0,
         arguments=[arg("--no-check", action="store_true", help="only print the line; do not start gdb")],
         render=_render_gdbinit)
def gdbinit_cmd(target, args):
    from ..install import gdbinit
    return gdbinit(check=not args.no_check)


def _render_crash(r, args):
    done = "built" if r["built"] else "up to date"
    return "\n".join([r["line"], "# type the line above at crash's prompt, or put it in ~/.crashrc"]
                     + _comment([f"{r['so']}: {done} (crash's {r['defs']}, {r['python_library']} of "
                                 "/usr/bin/python3, the Python it embeds)"]))


@command("crash-extension", "Build the crash bridge xenscope.so into this install (gcc, crash's defs.h, "
                            "/usr/bin/python3's libpython; again only when one of them changed) and print the "
                            "`extend` line for crash.",
         target=None, cli_only=True,
         arguments=[arg("--defs", default="/usr/include/crash/defs.h", metavar="PATH",
                        help="crash's defs.h (default: Debian's package crash)"),
                    arg("--force", action="store_true", help="build even when the .so is up to date")],
         render=_render_crash)
def crash_extension_cmd(target, args):
    from ..install import build_crash_extension
    return build_crash_extension(defs=args.defs, force=args.force)
