"""``check --html FILE``: one self-contained HTML page for a batch (inline CSS and SVG; no script,
no server, no network).

The page: a summary line (dumps, unreadable, checks with findings, errors, the exit status); a table
with a row per dump and a column per check (its status, the summary as a tooltip); then a section
per dump: each check as an expandable ``<details>`` whose findings are ``<details>`` of their own
(the one-line text, expanding to every field; the checks with findings or an error are open), and the pictures of :mod:`xenstructs.report_svg`
drawn by :func:`pictures` where the dump was read (:attr:`~xenstructs.check.DumpReport.pictures`)
from the ``frames --summary``, ``domains`` and ``maps`` JSON (:mod:`xenstructs.views`): the frame
census and the domains of a Xen host, and the address-space map.
"""

import datetime
import os
from html import escape

from . import report_svg
from .check import CHECKS, exit_status

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #ccc}
h3{font-size:14px;margin:14px 0 4px}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:left}
th{background:#f2f2f2}code,.fields td{font-family:ui-monospace,monospace;font-size:12px}
.status{font-weight:600;border-radius:3px;padding:1px 6px;color:#fff;white-space:nowrap}
.status.ok{background:#2ca02c}.status.findings{background:#e6550d}.status.error{background:#b10026}
.status.na{background:#aaa}.status.unreadable{background:#b10026}
details.check{margin:4px 0}details.check>summary{cursor:pointer}
details.finding{margin:1px 0 1px 18px}details.finding>summary{cursor:pointer;font-family:ui-monospace,monospace;font-size:12px}
ul.findings{list-style:none;margin:2px 0;padding:0}.fields{margin:2px 0 6px 18px}
.legend span{margin-right:14px;font-size:12px;white-space:nowrap}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
.caption{color:#555;font-size:12px;margin:2px 0}
.slot{display:flex;align-items:center;margin:1px 0}.slotname{width:170px;font-size:11px;color:#444}
svg text{font-size:12px}.kind{color:#555;font-weight:400;font-size:13px}
"""


def write_report(path, reports):
    """Write the page of ``reports`` (:class:`~xenstructs.check.DumpReport`) to ``path``, atomically."""
    from .errors import XenscopeError
    page = render(reports)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise XenscopeError(f"cannot write the HTML report {path}: {e.strerror or e}") from None


def render(reports):
    """The whole page as text."""
    from . import __version__
    dicts = [r.as_dict() for r in reports]
    unreadable = sum(d["kind"] == "unreadable" for d in dicts)
    findings = sum(c["status"] == "findings" for d in dicts for c in d["checks"])
    errors = sum(c["status"] == "error" for d in dicts for c in d["checks"] if d["kind"] != "unreadable")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f'<p class="summary">{len(dicts)} dump(s): {unreadable} unreadable, {findings} check(s) with '
            f"findings, {errors} check error(s); exit status {exit_status(reports)}. "
            f"Written {when} by xenscope {escape(str(__version__))}.</p>")
    body = [head, _batch_table(dicts)] + [_section(i, r, d) for i, (r, d) in enumerate(zip(reports, dicts))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>xenscope check: {len(dicts)} dump(s)</title><style>{STYLE}</style></head>"
            "<body><h1>xenscope check</h1>" + "\n".join(body) + "</body></html>\n")


def _badge(status, text=None):
    cls = {"n.a.": "na"}.get(status, status)
    return f'<span class="status {cls}">{escape(text or status)}</span>'


def _batch_table(dicts):
    rows = []
    for i, d in enumerate(dicts):
        by = {c["name"]: c for c in d["checks"]}
        cells = [f'<td colspan="{len(CHECKS)}" data-check="{escape(c["name"])}" data-status="{escape(c["status"])}" '
                 f'title="{escape(c["summary"])}">{_badge(c["status"])} {escape(c["summary"])}</td>'
                 for c in d["checks"] if c["name"] not in CHECKS]          # "open" of an unreadable dump
        for name in CHECKS if not cells else ():
            c = by.get(name)
            if c is None:
                cells.append("<td></td>")
                continue
            count = f" ({len(c['findings'])})" if c["findings"] else ""
            cells.append(f'<td data-check="{name}" data-status="{escape(c["status"])}" title="{escape(c["summary"])}">'
                         f'{_badge(c["status"], c["status"] + count)}</td>')
        kind = _badge("unreadable") if d["kind"] == "unreadable" else escape(d["kind"])
        rows.append(f'<tr class="dump" data-dump="{escape(d["dump"])}"><td><a href="#dump-{i}">'
                    f'{escape(d["dump"])}</a></td><td>{kind}</td>' + "".join(cells) + "</tr>")
    return ('<table id="batch"><thead><tr><th>dump</th><th>kind</th>' + "".join(f"<th>{c}</th>" for c in CHECKS)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _section(index, report, d):
    out = [f'<section class="dump" id="dump-{index}" data-dump="{escape(d["dump"])}" data-kind="{escape(d["kind"])}">'
           f'<h2>{escape(d["dump"])} <span class="kind">{escape(d["kind"])}</span></h2>']
    out += [_check(c) for c in d["checks"]]
    out.append(report.pictures or "")
    out.append("</section>")
    return "".join(out)


def pictures(views):
    """The markup of one dump's pictures from :func:`xenstructs.views.gather`'s ``views``."""
    out = []
    if views.get("frames"):
        out.append("<h3>Frame census (frames --summary)</h3>" + _view(views["frames"], lambda v: report_svg.census_chart(v["census"])))
    if views.get("domains"):
        out.append("<h3>Domains</h3>" + _view(views["domains"], lambda v: report_svg.domains_table(v["domains"])))
    if views.get("maps"):
        out.append("<h3>Address space of CPU 0 (maps)</h3>" + _view(views["maps"], report_svg.address_map))
    return "".join(out)


def _view(view, draw):
    if "error" in view:
        return f'<p class="caption">not drawn: {escape(view["error"])}</p>'
    return draw(view)


def _check(c):
    summary = f'{_badge(c["status"])} <b>{escape(c["name"])}</b>: {escape(c["summary"])}'
    items = "".join(_finding(f) for f in c["findings"])
    inner = f'<ul class="findings">{items}</ul>' if items else '<p class="caption">no findings</p>'
    opened = " open" if c["status"] in ("findings", "error") else ""      # what needs a look, shown
    return (f'<details class="check" data-check="{escape(c["name"])}" data-status="{escape(c["status"])}"{opened}>'
            f"<summary>{summary}</summary>{inner}</details>")


def _finding(f):
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(_value(v))}</td></tr>"
                   for k, v in sorted(f.items()) if k != "text")
    return (f'<li><details class="finding" data-kind="{escape(str(f.get("kind")))}"><summary>{escape(str(f.get("text", "")))}'
            f'</summary><table class="fields">{rows}</table></details></li>')


def _value(v):
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "null"
    if isinstance(v, int):
        return f"{v:#x}" if v >= 4096 else str(v)
    if isinstance(v, (list, dict)):
        import json
        return json.dumps(v, sort_keys=True)
    return str(v)
