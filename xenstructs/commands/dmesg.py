"""``dmesg``: the console text a dump holds (Xen's console ring, or the kernel's printk buffer)."""

from . import arg, command, group, number


def _render(r, args):
    lines = r["lines"] if not args.tail else r["lines"][-args.tail:]
    head = [r["description"]]
    if args.tail and len(r["lines"]) > args.tail:
        head.append(f"(the last {args.tail} of {len(r['lines'])} lines)")
    return "\n".join(head + lines)


@command("dmesg", "The console text the dump holds, oldest first: Xen's console ring on a Xen host (as xl "
                  "dmesg prints it), the kernel's printk buffer on a Linux dump (as the console printed it: "
                  "[seconds] text). The first line says which buffer, its size, what was lost and where "
                  "the symbols came from.",
         arguments=[
             group("Xen (default: from the dump)",
                   arg("--xen-syms", metavar="PATH", help="xen-syms (ELF) or its .map: Xen's symbols (conring...)"),
                   arg("--xen", metavar="VERSION", help="Xen release, when the dump does not say"),
                   arg("--cpu", type=number, default=0, help="CPU whose page tables are read (default 0)")),
             arg("--system-map", metavar="MAP",
                 help="the kernel's System.map or kallsyms: prb for a Linux dump without VMCOREINFO (an xl "
                      "dump-core file)"),
             arg("--tail", type=number, default=0, metavar="N", help="only the last N lines (text output)")],
         render=_render)
def dmesg_cmd(target, args):
    from ..dumpconsole import dump_console
    console = dump_console(target, xen_syms=args.xen_syms, xen=args.xen, system_map=args.system_map, cpu=args.cpu)
    return console.as_dict()
