"""Every task of a Linux kernel (init_task.tasks), with its page directory."""
from xenstructs.api import for_each_task, open_dump, open_kernel

kernel = open_kernel(open_dump("cores/mod-x86_64.core"), vmlinux="cores/mod-x86_64.vmlinux")
tasks = for_each_task(kernel)
for task in tasks[:5]:
    root = "-" if task.root is None else f"{task.root:#x}"
    print(f"{task.pid:5} {task.comm:16} task {task.address:#x} pgd {task.pgd:#x} ({task.pgd_from}) table {root}")
print(f"... {len(tasks)} tasks; the list {'broke: ' + str(tasks.error) if tasks.error else 'is whole'}")
