#!/usr/bin/env python3
"""Compute the ``struct domain`` / ``struct grant_table`` / ``struct active_grant_entry`` offsets of a
Xen release with gcc: the maintainer's tool behind ``xenstructs/xen/domain_layouts.py``.

    python tests/realsys/xen_struct_offsets.py --repo XEN_GIT --tag RELEASE-4.17.7 --config defconfig
    python tests/realsys/xen_struct_offsets.py --repo XEN_GIT --tag RELEASE-4.17.7 --config debug
    python tests/realsys/xen_struct_offsets.py --repo XEN_GIT --tag RELEASE-4.17.7 \\
        --config /boot/xen-4.17-amd64.config          # a distribution's build configuration

``XEN_GIT``: a git clone of the public Xen repository (any tree with the tag). The tag's ``xen/``
is archived into a temporary directory, configured (``defconfig``; ``debug`` = defconfig plus
``CONFIG_DEBUG=y``; or ``olddefconfig`` over the given ``.config``), its build is stopped right after
the generated headers (the ``$(TARGET)`` recipe's last step is replaced by compiling
``common/grant_table.s``), and ``xen/common/grant_table.c`` is compiled with a function appended that
puts every ``offsetof``/``sizeof`` into the assembler output (struct grant_table and struct
active_grant_entry are private to that file). Prints one JSON object: the values and the
configuration options that move them. Needs gcc, make, flex, bison, python3 (about a minute).
Not run by the test suite (it needs the Xen repository); the table's values for the Xen the
real-system tier boots are checked against its dump in test_xen_domu_boot.py.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

MEMBERS = (
    ("domain_size", "sizeof(struct domain)"),
    ("domain_shared_info", "offsetof(struct domain, shared_info)"),
    ("domain_grant_table", "offsetof(struct domain, grant_table)"),
    ("domain_is_privileged", "offsetof(struct domain, is_privileged)"),
    ("domain_auto_node_affinity", "offsetof(struct domain, auto_node_affinity)"),
    ("domain_target", "offsetof(struct domain, target)"),
    ("gt_size", "sizeof(struct grant_table)"),
    ("gt_gt_version", "offsetof(struct grant_table, gt_version)"),
    ("gt_nr_grant_frames", "offsetof(struct grant_table, nr_grant_frames)"),
    ("gt_active", "offsetof(struct grant_table, active)"),
    ("gt_domain", "offsetof(struct grant_table, domain)"),
    ("act_size", "sizeof(struct active_grant_entry)"),
    ("act_pin", "offsetof(struct active_grant_entry, pin)"),
    ("act_domid", "offsetof(struct active_grant_entry, domid)"),
    ("act_mfn", "offsetof(struct active_grant_entry, mfn)"),
)
OPTIONS = ("CONFIG_DEBUG", "CONFIG_DEBUG_LOCKS", "CONFIG_DEBUG_LOCK_PROFILE", "CONFIG_MEM_SHARING",
           "CONFIG_MEM_PAGING", "CONFIG_HAS_PASSTHROUGH", "CONFIG_ARGO", "CONFIG_HVM", "CONFIG_NUMA")


def probe_source():
    lines = ['#define XSP(name, val) asm volatile("\\n.ascii \\"==>" #name " %c0<==\\"" :: "i"((long)(val)))',
             "void xsprobe(void);", "void xsprobe(void)", "{"]
    lines += [f"    XSP({name}, {expr});" for name, expr in MEMBERS]
    return "\n" + "\n".join(lines + ["}"]) + "\n"


def stop_after_headers(makefile):
    """The top Makefile with its ``$(TARGET)`` recipe's last step (the link) replaced by compiling
    the probe (4.17+: ``$(build)`` style; 4.14-4.16: ``-f $(BASEDIR)/Rules.mk``)."""
    text = open(makefile).read()
    m = re.search(r"^\$\(TARGET\):.*\n((?:\t.*\n)+)", text, re.M)
    recipe = m.group(1).splitlines(keepends=True)
    new_style = "$(build)" in recipe[-1]
    step = ("\t$(Q)$(MAKE) $(build)=common common/grant_table.s\n" if new_style
            else "\t$(MAKE) -f $(BASEDIR)/Rules.mk -C common grant_table.s\n")
    with open(makefile, "w") as f:
        f.write(text.replace("".join(recipe), "".join(recipe[:-1]) + step))
    return "xen" if new_style else "build"


def configure(xen, config, env, log):
    def make(*args):
        subprocess.run(["make", *args], cwd=xen, env=env, stdout=log, stderr=log, check=True)
    if config in ("defconfig", "debug"):
        make("defconfig")
        if config == "debug":
            with open(os.path.join(xen, ".config"), "a") as f:
                f.write("CONFIG_DEBUG=y\n")
            make("olddefconfig")
    else:
        shutil.copy(config, os.path.join(xen, ".config"))
        make("olddefconfig")


def compute(repo, tag, config):
    work = tempfile.mkdtemp(prefix="xen-offsets-")
    try:
        subprocess.run(f"git -C {repo} archive {tag} xen config Config.mk scripts | tar x -C {work}",
                       shell=True, check=True)
        xen = os.path.join(work, "xen")
        with open(os.path.join(xen, "common", "grant_table.c"), "a") as f:
            f.write(probe_source())
        goal = stop_after_headers(os.path.join(xen, "Makefile"))
        env = dict(os.environ, XEN_TARGET_ARCH="x86_64", PYTHON="python3")
        with open(os.path.join(work, "build.log"), "w") as log:
            configure(xen, config, env, log)
            subprocess.run(["make", goal], cwd=xen, env=env, stdout=log, stderr=log)
        asm = os.path.join(xen, "common", "grant_table.s")
        if not os.path.exists(asm):
            sys.exit(f"{tag}: grant_table.s was not built; see {work}/build.log")
        values = {k: int(v) for k, v in re.findall(r"==>(\w+) (\d+)<==", open(asm).read())}
        opts = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", open(os.path.join(xen, ".config")).read(), re.M))
        shutil.rmtree(work)
        return {"tag": tag, "config": config, "offsets": values, "options": {k: opts.get(k) for k in OPTIONS}}
    except BaseException:
        print(f"work tree kept: {work}", file=sys.stderr)
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", required=True, help="a git clone of the Xen repository")
    ap.add_argument("--tag", required=True, help="e.g. RELEASE-4.17.7")
    ap.add_argument("--config", default="defconfig", help="defconfig, debug, or a .config file")
    args = ap.parse_args()
    json.dump(compute(args.repo, args.tag, args.config), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
