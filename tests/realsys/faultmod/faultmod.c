// SPDX-License-Identifier: GPL-2.0
/*
 * faultmod: provoke ONE kernel page fault of a chosen class, for xenscope's real-system tests.
 *
 *   insmod faultmod.ko                      # creates /proc/xenscope_fault (nothing faults yet)
 *   echo smap > /proc/xenscope_fault        # the writing task faults in kernel mode
 *
 * Classes: smap (a kernel read of a user page, no stac), smep (a kernel call into a user page),
 * nx (a kernel call into kmalloc'd data), rodata (a kernel write to this module's read-only data),
 * notpresent (a kernel read of a vfree'd vmalloc page), reserved (a kernel read of a vmalloc page
 * whose PTE has a reserved physical-address bit set by this module).
 *
 * Before faulting it prints one line with the state it used (pr_emerg, so it shows at any
 * console log level):
 *
 *   XENSCOPE-FAULTMOD class=C va=0x... level=L pte=0x... pte_va=0x... pte_pa=0x... [more]
 *
 * ``level`` is the level of the leaf entry (4k, 2M, 1G) and ``pte``/``pte_va``/``pte_pa`` the leaf
 * entry's value, its kernel virtual address and its physical address (``level=none`` when there is
 * none: the walk stopped above it). Test code, built at test time against the booted kernel's
 * headers; it deliberately crashes the machine it runs on.
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mman.h>
#include <linux/mm.h>
#include <linux/uaccess.h>
#include <linux/string.h>
#include <asm/pgtable.h>
#include <asm/tlbflush.h>
#include <asm/processor.h>

#define MARK "XENSCOPE-FAULTMOD"

typedef void (*faultmod_fn)(void);

/* A page of this module's read-only data: STRICT_MODULE_RWX maps it RO (and NX). */
static const char faultmod_ro_page[PAGE_SIZE] __aligned(PAGE_SIZE) = "xenscope read-only page";

static const char *level_name(unsigned int level)
{
	switch (level) {
	case PG_LEVEL_4K: return "4k";
	case PG_LEVEL_2M: return "2M";
	case PG_LEVEL_1G: return "1G";
	default: return "other";
	}
}

/* Print the marker line for a kernel address: its leaf entry through lookup_address(). */
static void report_kernel(const char *class, unsigned long va, const char *more)
{
	unsigned int level = 0;
	pte_t *pte = lookup_address(va, &level);

	if (!pte) {
		pr_emerg(MARK " class=%s va=0x%lx level=none %s\n", class, va, more);
		return;
	}
	pr_emerg(MARK " class=%s va=0x%lx level=%s pte=0x%lx pte_va=0x%lx pte_pa=0x%llx %s\n", class, va,
		 level_name(level), (unsigned long)pte_val(*pte), (unsigned long)pte,
		 (unsigned long long)__pa(pte), more);
}

/* The PTE of a user address of the current task (4 KiB pages only: what vm_mmap gives us). */
static pte_t *user_pte(unsigned long va)
{
	pgd_t *pgd = pgd_offset(current->mm, va);
	p4d_t *p4d;
	pud_t *pud;
	pmd_t *pmd;

	if (pgd_none(*pgd))
		return NULL;
	p4d = p4d_offset(pgd, va);
	if (p4d_none(*p4d))
		return NULL;
	pud = pud_offset(p4d, va);
	if (pud_none(*pud) || pud_large(*pud))
		return NULL;
	pmd = pmd_offset(pud, va);
	if (pmd_none(*pmd) || pmd_large(*pmd))
		return NULL;
	return pte_offset_kernel(pmd, va);
}

static void report_user(const char *class, unsigned long va)
{
	pte_t *pte = user_pte(va);

	if (!pte) {
		pr_emerg(MARK " class=%s va=0x%lx level=none cr4=0x%lx\n", class, va, __read_cr4());
		return;
	}
	pr_emerg(MARK " class=%s va=0x%lx level=4k pte=0x%lx pte_va=0x%lx pte_pa=0x%llx cr4=0x%lx\n", class, va,
		 (unsigned long)pte_val(*pte), (unsigned long)pte, (unsigned long long)__pa(pte), __read_cr4());
}

/* A populated anonymous page in the writing task's address space. */
static unsigned long user_page(unsigned long prot)
{
	return vm_mmap(NULL, 0, PAGE_SIZE, prot, MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE, 0);
}

static noinline int faultmod_smap(void)
{
	unsigned long va = user_page(PROT_READ | PROT_WRITE);
	int *p = (int *)va;

	if (IS_ERR_VALUE(va))
		return (int)va;
	report_user("smap", va);
	return READ_ONCE(*p);          /* a supervisor read of a user page with EFLAGS.AC=0 */
}

static noinline int faultmod_smep(void)
{
	unsigned long va = user_page(PROT_READ | PROT_WRITE | PROT_EXEC);
	static const u8 ret = 0xc3;
	faultmod_fn fn = (faultmod_fn)va;

	if (IS_ERR_VALUE(va))
		return (int)va;
	if (copy_to_user((void __user *)va, &ret, 1))
		return -EFAULT;
	report_user("smep", va);
	fn();                          /* a supervisor instruction fetch from a user page */
	return 0;
}

static noinline int faultmod_nx(void)
{
	u8 *data = kmalloc(64, GFP_KERNEL);
	faultmod_fn fn = (faultmod_fn)data;

	if (!data)
		return -ENOMEM;
	data[0] = 0xc3;
	report_kernel("nx", (unsigned long)data, "");
	fn();                          /* a supervisor instruction fetch from NX kernel data */
	return 0;
}

static noinline int faultmod_rodata(void)
{
	char *p = (char *)faultmod_ro_page;

	OPTIMIZER_HIDE_VAR(p);
	report_kernel("rodata", (unsigned long)p, "");
	WRITE_ONCE(*p, 'X');           /* a supervisor write to a read-only page, CR0.WP=1 */
	return 0;
}

static noinline int faultmod_notpresent(void)
{
	int *p = vmalloc(PAGE_SIZE);
	char more[64];
	unsigned int level = 0;
	pte_t *pte;

	if (!p)
		return -ENOMEM;
	pte = lookup_address((unsigned long)p, &level);
	snprintf(more, sizeof(more), "pte_before=0x%lx", pte ? (unsigned long)pte_val(*pte) : 0UL);
	vfree(p);
	vm_unmap_aliases();            /* purge the lazily freed area and flush the TLB */
	report_kernel("notpresent", (unsigned long)p, more);
	return READ_ONCE(*p);          /* a supervisor read of a vfree'd page */
}

static noinline int faultmod_reserved(void)
{
	int *p = vmalloc(PAGE_SIZE);   /* never touched through p before the fault: no TLB entry */
	unsigned int level = 0, bit = boot_cpu_data.x86_phys_bits;
	char more[96];
	pte_t *pte;

	if (!p)
		return -ENOMEM;
	pte = lookup_address((unsigned long)p, &level);
	if (!pte || level != PG_LEVEL_4K || bit >= 52)
		return -EINVAL;
	snprintf(more, sizeof(more), "pte_before=0x%lx bit=%u phys_bits=%u",
		 (unsigned long)pte_val(*pte), bit, boot_cpu_data.x86_phys_bits);
	set_pte(pte, __pte(pte_val(*pte) | (1UL << bit)));
	__flush_tlb_all();
	report_kernel("reserved", (unsigned long)p, more);
	return READ_ONCE(*p);          /* a supervisor read through a PTE with a reserved bit set */
}

static const struct {
	const char *name;
	int (*provoke)(void);
} classes[] = {
	{"smap", faultmod_smap},
	{"smep", faultmod_smep},
	{"nx", faultmod_nx},
	{"rodata", faultmod_rodata},
	{"notpresent", faultmod_notpresent},
	{"reserved", faultmod_reserved},
};

static noinline ssize_t faultmod_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	char name[16] = "";
	size_t i;
	int rc;

	if (len >= sizeof(name) || copy_from_user(name, buf, len))
		return -EINVAL;
	strim(name);
	for (i = 0; i < ARRAY_SIZE(classes); i++) {
		if (strcmp(name, classes[i].name))
			continue;
		rc = classes[i].provoke();
		pr_emerg(MARK " class=%s did not fault (%d)\n", name, rc);
		return rc < 0 ? rc : len;
	}
	pr_emerg(MARK " unknown class '%s'\n", name);
	return -EINVAL;
}

static const struct proc_ops faultmod_ops = {
	.proc_write = faultmod_write,
};

static struct proc_dir_entry *faultmod_entry;

static int __init faultmod_init(void)
{
	faultmod_entry = proc_create("xenscope_fault", 0200, NULL, &faultmod_ops);
	return faultmod_entry ? 0 : -ENOMEM;
}

static void __exit faultmod_exit(void)
{
	proc_remove(faultmod_entry);
}

module_init(faultmod_init);
module_exit(faultmod_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("xenscope test: provoke one kernel page fault of a chosen class");
