import glob
import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = os.path.join(TOP, "cores")
# paging-core manifests; the Xen host cores (xen-*), PV guest dumps (pv-*), kernel-object cores (mod-*)
# and translated-guest cores (hap-*) have their own schemas and tests
MANIFESTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CORES, "*.json"))
                   if not os.path.basename(p).startswith(("xen-", "mod-", "pv-", "hap-")))
XEN_MANIFESTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CORES, "xen-*.json")))

if TOP not in sys.path:
    sys.path.insert(0, TOP)
