// SPDX-License-Identifier: GPL-2.0
/*
 * xsmmu: ask Xen (from a 64-bit PV Linux kernel) for what a PV guest must not get, and report
 * exactly what was asked. A test module of xenscope's real-system tier; never for a real system.
 *
 *   echo SCENARIO > /proc/xsmmu      run one scenario (its requests are refused by Xen)
 *   cat /proc/xsmmu                  its report: one "key=value" per line (mfns, slots, entries,
 *                                    VAs, the machine address of each PTE, the hypercalls' rc)
 *
 * Every page a scenario uses is allocated here and never freed, so the state it leaves (pages
 * still mapped writable, pages made read-only, a P2M entry changed) is what a dump shows.
 *
 * Scenarios:
 *   pin_writable_l1   pin as an L1 a page still mapped writable (the kernel's direct map)
 *   cascade_l2        L2 page B with slot N -> page A (RW, A still mapped writable); pin B as L2
 *   cascade_l3        the same B and A under an L3 page C with slot M -> B; pin C as L3
 *   bad_l1_flags      an L1 page whose slot K has bit 62 (Xen's _PAGE_GNTTAB, never allowed in a
 *                     PV L1 entry); pin it as L1
 *   bad_l1_flags_update  mmu_update of the direct-map L1 entry of a page with bit 62 added
 *   bad_l2_flags      an L2 page whose slot K has PSE (no superpages for PV); pin it as L2
 *   unpin_not_pinned  unpin a page that is not pinned
 *   foreign_self MFN  mmu_update of the direct-map L1 entry of one of our pages to another
 *                     domain's frame MFN, asking with DOMID_SELF (the frame is not ours)
 *   foreign_dom0 MFN  the same, naming domain 0 as the frames' owner (foreigndom = 0): what an
 *                     unprivileged domain has no permission for
 *   p2m_wrong_mfn     the P2M entry of one of our pfns changed to the mfn of another of our pages
 *                     (what __set_phys_to_machine does: set_phys_to_machine is not exported to
 *                     modules, xen_p2m_addr is)
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <xen/xen.h>
#include <xen/interface/xen.h>
#include <asm/xen/hypercall.h>
#include <asm/xen/page.h>
#include <asm/pgtable.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("xenscope test: provoke Xen PV MMU refusals and report what was asked");

#define TABLE_FLAGS (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED)
#define SLOT_N 0x123          /* the L2 slot pointing at A */
#define SLOT_M 0x45           /* the L3 slot pointing at B */
#define SLOT_K 0x7            /* the slot holding the bad flags */
#define GNTTAB_BIT (1UL << 62)

static char report[8192];
static size_t report_len;
static DEFINE_MUTEX(lock);

static void say(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	report_len += vscnprintf(report + report_len, sizeof(report) - report_len, fmt, args);
	va_end(args);
}

/* A zeroed page of our own, kept for ever (its state is what the dump shows). */
static void *fresh_page(void)
{
	return (void *)get_zeroed_page(GFP_KERNEL);
}

static unsigned long mfn_of(void *va)
{
	return virt_to_mfn(va);
}

/* The direct-map PTE mapping va: its machine address and raw (machine) value. */
static pte_t *pte_of(void *va, u64 *maddr)
{
	unsigned int level;
	pte_t *ptep = lookup_address((unsigned long)va, &level);

	*maddr = ptep && level == PG_LEVEL_4K ? arbitrary_virt_to_machine(ptep).maddr : 0;
	return level == PG_LEVEL_4K ? ptep : NULL;
}

static void say_page(const char *name, void *va)
{
	u64 pte_ma = 0;
	pte_t *ptep = pte_of(va, &pte_ma);

	say("%s_va=%#lx\n%s_pfn=%#lx\n%s_mfn=%#lx\n", name, (unsigned long)va, name,
	    (unsigned long)(__pa(va) >> PAGE_SHIFT), name, mfn_of(va));
	if (ptep)
		say("%s_pte_maddr=%#llx\n%s_pte=%#llx\n", name, pte_ma, name,
		    (unsigned long long)ptep->pte);
}

/* Make the direct-map mapping of va read-only (what Linux does before pinning a table). */
static int make_readonly(const char *name, void *va)
{
	u64 pte_ma;
	pte_t *ptep = pte_of(va, &pte_ma);
	int rc;

	if (!ptep)
		return -EFAULT;
	rc = HYPERVISOR_update_va_mapping((unsigned long)va, __pte_ma(ptep->pte & ~_PAGE_RW),
					  UVMF_INVLPG);
	say("%s_readonly_rc=%d\n%s_pte_after=%#llx\n", name, rc, name,
	    (unsigned long long)ptep->pte);
	return rc;
}

static int mmuext(const char *what, unsigned int cmd, unsigned long mfn)
{
	struct mmuext_op op = { .cmd = cmd, .arg1.mfn = mfn };
	int rc = HYPERVISOR_mmuext_op(&op, 1, NULL, DOMID_SELF);

	say("%s_cmd=%u\n%s_mfn=%#lx\n%s_rc=%d\n", what, cmd, what, mfn, what, rc);
	return rc;
}

static int mmu_update(const char *what, u64 ptr, u64 val, domid_t dom)
{
	struct mmu_update req = { .ptr = ptr | MMU_NORMAL_PT_UPDATE, .val = val };
	int rc = HYPERVISOR_mmu_update(&req, 1, NULL, dom);

	say("%s_ptr=%#llx\n%s_val=%#llx\n%s_domid=%u\n%s_rc=%d\n", what, ptr, what, val, what,
	    dom, what, rc);
	return rc;
}

/* An entry: the machine frame of target with flags. */
static u64 entry_to(void *target, u64 flags)
{
	return ((u64)mfn_of(target) << PAGE_SHIFT) | flags;
}

static void set_slot(const char *name, void *table, unsigned int slot, u64 entry)
{
	((u64 *)table)[slot] = entry;
	say("%s_slot=%#x\n%s_entry=%#llx\n", name, slot, name, entry);
}

static int pin_writable_l1(void)
{
	void *a = fresh_page();

	if (!a)
		return -ENOMEM;
	say_page("a", a);
	return mmuext("pin", MMUEXT_PIN_L1_TABLE, mfn_of(a));
}

/* B (L2) slot N -> A (RW), A still mapped writable; C (L3) slot M -> B when with_l3. */
static int cascade(bool with_l3)
{
	void *a = fresh_page(), *b = fresh_page(), *c = with_l3 ? fresh_page() : NULL;

	if (!a || !b || (with_l3 && !c))
		return -ENOMEM;
	say_page("a", a);
	say_page("b", b);
	set_slot("b", b, SLOT_N, entry_to(a, TABLE_FLAGS));
	make_readonly("b", b);
	if (!with_l3)
		return mmuext("pin", MMUEXT_PIN_L2_TABLE, mfn_of(b));
	say_page("c", c);
	set_slot("c", c, SLOT_M, entry_to(b, TABLE_FLAGS));
	make_readonly("c", c);
	return mmuext("pin", MMUEXT_PIN_L3_TABLE, mfn_of(c));
}

static int bad_flags(unsigned int level)
{
	void *table = fresh_page(), *target = fresh_page();
	u64 flags = level == 1 ? (_PAGE_PRESENT | _PAGE_ACCESSED | GNTTAB_BIT)
			       : (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_PSE);

	if (!table || !target)
		return -ENOMEM;
	say_page("table", table);
	say_page("target", target);
	if (level == 2)
		make_readonly("target", target);    /* so only the flags are wrong */
	set_slot("table", table, SLOT_K, entry_to(target, flags));
	make_readonly("table", table);
	return mmuext("pin", level == 1 ? MMUEXT_PIN_L1_TABLE : MMUEXT_PIN_L2_TABLE,
		      mfn_of(table));
}

static int bad_l1_flags_update(void)
{
	void *target = fresh_page();
	u64 pte_ma;
	pte_t *ptep;

	if (!target)
		return -ENOMEM;
	say_page("target", target);
	ptep = pte_of(target, &pte_ma);
	if (!ptep)
		return -EFAULT;
	return mmu_update("update", pte_ma, ptep->pte | GNTTAB_BIT, DOMID_SELF);
}

static int unpin_not_pinned(void)
{
	void *page = fresh_page();

	if (!page)
		return -ENOMEM;
	say_page("page", page);
	return mmuext("unpin", MMUEXT_UNPIN_TABLE, mfn_of(page));
}

static int foreign(unsigned long foreign_mfn, domid_t owner)
{
	void *target = fresh_page();
	u64 pte_ma;
	pte_t *ptep;

	if (!target)
		return -ENOMEM;
	say_page("target", target);
	ptep = pte_of(target, &pte_ma);
	if (!ptep)
		return -EFAULT;
	say("foreign_mfn=%#lx\n", foreign_mfn);
	return mmu_update("update", pte_ma,
			  ((u64)foreign_mfn << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_ACCESSED |
			  (_PAGE_NX & __supported_pte_mask), owner);
}

static int p2m_wrong_mfn(void)
{
	void *page = fresh_page(), *other = fresh_page();
	unsigned long pfn;

	if (!page || !other)
		return -ENOMEM;
	say_page("page", page);
	say_page("other", other);
	pfn = __pa(page) >> PAGE_SHIFT;
	if (pfn >= xen_p2m_size)
		return -ERANGE;
	say("p2m_entry_va=%#lx\np2m_before=%#lx\n", (unsigned long)&xen_p2m_addr[pfn],
	    xen_p2m_addr[pfn]);
	xen_p2m_addr[pfn] = mfn_of(other);
	say("p2m_after=%#lx\n", xen_p2m_addr[pfn]);
	return 0;
}

static int run(const char *name, unsigned long arg)
{
	if (!strcmp(name, "pin_writable_l1"))
		return pin_writable_l1();
	if (!strcmp(name, "cascade_l2"))
		return cascade(false);
	if (!strcmp(name, "cascade_l3"))
		return cascade(true);
	if (!strcmp(name, "bad_l1_flags"))
		return bad_flags(1);
	if (!strcmp(name, "bad_l2_flags"))
		return bad_flags(2);
	if (!strcmp(name, "bad_l1_flags_update"))
		return bad_l1_flags_update();
	if (!strcmp(name, "unpin_not_pinned"))
		return unpin_not_pinned();
	if (!strcmp(name, "foreign_self"))
		return foreign(arg, DOMID_SELF);
	if (!strcmp(name, "foreign_dom0"))
		return foreign(arg, 0);
	if (!strcmp(name, "p2m_wrong_mfn"))
		return p2m_wrong_mfn();
	return -ENOENT;
}

static ssize_t xs_write(struct file *file, const char __user *buf, size_t len, loff_t *off)
{
	char line[64], *space;
	unsigned long arg = 0;
	int rc;

	if (len >= sizeof(line) || copy_from_user(line, buf, len))
		return -EINVAL;
	line[len] = 0;
	strim(line);
	space = strchr(line, ' ');
	if (space) {
		*space = 0;
		if (kstrtoul(space + 1, 0, &arg))
			return -EINVAL;
	}
	mutex_lock(&lock);
	report_len = 0;
	report[0] = 0;
	say("scenario=%s\ninitial_domain=%d\n", line, xen_initial_domain() ? 1 : 0);
	rc = run(line, arg);
	say("result=%d\n", rc);
	mutex_unlock(&lock);
	return rc == -ENOENT ? -ENOENT : len;
}

static int xs_show(struct seq_file *m, void *v)
{
	mutex_lock(&lock);
	seq_write(m, report, report_len);
	mutex_unlock(&lock);
	return 0;
}

static int xs_open(struct inode *inode, struct file *file)
{
	return single_open(file, xs_show, NULL);
}

static const struct proc_ops xs_ops = {
	.proc_open = xs_open,
	.proc_read = seq_read,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
	.proc_write = xs_write,
};

static int __init xs_init(void)
{
	if (!xen_pv_domain())
		return -ENODEV;
	return proc_create("xsmmu", 0600, NULL, &xs_ops) ? 0 : -ENOMEM;
}

static void __exit xs_exit(void)
{
	remove_proc_entry("xsmmu", NULL);
}

module_init(xs_init);
module_exit(xs_exit);
