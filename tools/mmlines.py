"""Generate ``xenstructs/xen/console/mmlines.py``: for every Xen release, the line of each mm.c
message the console annotator decodes (what ``gdprintk``'s ``mm.c:NNNN`` prints), read from the
real sources of a Xen git repository.

    python tools/mmlines.py /path/to/xen.git [NAME=COMMIT ...] > xenstructs/xen/console/mmlines.py

Every tag ``RELEASE-X.Y.Z`` from 4.4.0 on is read (``git show TAG:xen/arch/x86/mm.c``), and each
``NAME=COMMIT`` (e.g. a Debian package's upstream commit: ``4.17.5+72-g01140da4e8=01140da4e8``).
A message is a ``gdprintk(``/``MEM_LOG(`` call whose format string has one of the texts below;
its line is the call's first line (GCC 9+ ``__LINE__`` of a multi-line macro call) and its span
runs to the call's last line (what older compilers print). A call inside a ``#define`` prints
the line of each invocation of that macro (``define_get_linear_pagetable(l2);``: the level of a
"linear p.t." message is the invocation's argument). Function: the nearest definition above.
"""
import re
import subprocess
import sys

PATH = "xen/arch/x86/mm.c"
KINDS = (                                         # (kind, regex on the format string)
    ("bad_type", r"Bad type \(saw"),
    ("type_overflow", r"Type count overflow"),
    ("validate_error", r"Error while validating"),
    ("table_failure", r"Failure.* in (?:alloc|promote)_l(\d)_table"),
    ("linear_pt", r"Attempt to create linear p\.t\."),
    ("pin_error", r"while pinning"),
    ("already_pinned", r"already pinned"),
    ("not_pinned", r"not pinned"),
    ("bad_flags", r"Bad L(\d) flags"),
    ("l1e_ref_error", r"Error getting mfn.* from L1 entry"),
    ("io_map", r"attempt to map I/O space"),
    ("page_ref", r"Could not get page ref"),
    ("global_kernel", r"Global bit is set"),
)
CALL = re.compile(r"\b(gdprintk|MEM_LOG)\(")
DEFINITION = re.compile(r"^(?!define_get_linear)[A-Za-z_][\w \*]*?\b(\w+)\($")
DEFINITION_LINE = re.compile(r"^(?!define_get_linear)(?:[A-Za-z_][\w \*]*\s)?\**(\w+)\([^;]*$")


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                          check=True).stdout


def releases(repo):
    tags = [t for t in git(repo, "tag", "--list", "RELEASE-*").split()
            if re.fullmatch(r"RELEASE-4\.\d+\.\d+", t)]
    keyed = sorted((tuple(int(x) for x in t[8:].split(".")), t) for t in tags)
    return [(t[8:], t) for v, t in keyed if v >= (4, 4, 0)]


def _call_end(lines, start, col):
    depth, i, pos = 0, start, col
    while i < len(lines):
        text = lines[i]
        for j in range(pos, len(text)):
            if text[j] == "(":
                depth += 1
            elif text[j] == ")":
                depth -= 1
                if depth == 0:
                    return i
        i, pos = i + 1, 0
    return start


def _function(lines, index):
    for i in range(index, -1, -1):
        text = lines[i]
        if text.startswith(("{", "}", "#", " ", "\t", "/", "*")) or not text:
            continue
        match = DEFINITION_LINE.match(text.rstrip("\\ "))
        if match and not text.rstrip().endswith(";"):
            return match.group(1)
    return "?"


def _classify(text):
    literal = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', text))
    for kind, pattern in KINDS:
        match = re.search(pattern, literal)
        if match:
            return kind, int(match.group(1)) if match.groups() else 0
    return None


def _macro_name(lines, index):
    for i in range(index, -1, -1):
        match = re.match(r"#\s*define\s+(\w+)\(", lines[i])
        if match:
            return match.group(1)
        if not lines[i].rstrip().endswith("\\"):
            return None
    return None


def table(source):
    """Sorted ``(start, end, kind, level, function)`` of one mm.c."""
    lines = source.splitlines()
    rows = set()
    for index, text in enumerate(lines):
        for match in CALL.finditer(text):
            end = _call_end(lines, index, match.start())
            found = _classify("\n".join(lines[index:end + 1]))
            if found is None:
                continue
            kind, level = found
            in_macro = text.rstrip().endswith("\\")
            macro = _macro_name(lines, index) if in_macro else None
            if macro is None:
                rows.add((index + 1, end + 1, kind, level, _function(lines, index)))
                continue
            for use, used in enumerate(lines):
                call = re.match(rf"\s*{macro}\((\w*)", used)
                if call and not used.lstrip().startswith("#"):
                    arg = call.group(1)
                    use_level = int(arg[1]) if re.fullmatch(r"l\d", arg) else level
                    function = (f"get_{arg}_linear_pagetable" if macro.startswith("define_")
                                else _function(lines, use))
                    rows.add((use + 1, use + 1, kind, use_level, function))
    return tuple(sorted(rows))


def _wrap(words, width=100):
    lines, line = [], "   "
    for word in words:
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = "   "
        line += " " + word
    return lines + [line]


def main(argv):
    repo, extra = argv[0], [a.split("=", 1) for a in argv[1:]]
    groups = {}
    for name, ref in releases(repo) + [(n, c) for n, c in extra]:
        groups.setdefault(table(git(repo, "show", f"{ref}:{PATH}")), []).append(name)
    functions = sorted({row[4] for rows in groups for row in rows})
    kinds = [kind for kind, _ in KINDS]
    out = [f'"""mm.c line numbers of the decoded messages per Xen release (generated by '
           f'tools/mmlines.py\nfrom the Xen git repository; do not edit). {len(groups)} distinct '
           f'tables for {sum(map(len, groups.values()))} releases.\n\nTABLES: ((release, ...), '
           f'"start[-end] kind-index[/level] function-index;" ...) ..."""\n',
           "KINDS = (", *_wrap([f"{k!r}," for k in kinds]), ")\n",
           "FUNCTIONS = (", *_wrap([f"{f!r}," for f in functions]), ")\n", "TABLES = ("]
    for rows, names in groups.items():
        cells = [f"{s}{'' if e == s else f'-{e}'} {kinds.index(k)}{f'/{lv}' if lv else ''} "
                 f"{functions.index(f)};" for s, e, k, lv, f in rows]
        out.append(f"    ({tuple(names)!r},")
        line = ""
        for cell in cells:
            if len(line) + len(cell) > 100:
                out.append(f"     {line!r}")
                line = ""
            line += cell
        out.append(f"     {line!r}),")
    out.append(")")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
