"""Xen hypervisor knowledge: page_info layouts, the hypervisor's memory layout, frames, logs."""
