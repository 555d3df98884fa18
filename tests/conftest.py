import glob
import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = os.path.join(TOP, "cores")
MANIFESTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CORES, "*.json")))

if TOP not in sys.path:
    sys.path.insert(0, TOP)
