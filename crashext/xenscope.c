/*
 * xenscope.so: the crash utility's bridge to xenscope.
 *
 *   crash> extend <checkout>/crashext/xenscope.so
 *   crash> xen walk ffffffff81000000
 *
 * A thin bridge, on purpose: it embeds the Python that gdb embeds (/usr/bin/python3's libpython),
 * gives Python a module `_crash` with crash's own services (readmem() of every address type,
 * symbols, structure offsets and sizes, VMCOREINFO, QEMU CPU registers, the current context,
 * crash's output stream), and registers one crash command, `xen`, whose arguments go to
 * crashext/front.py. Every analysis is xenscope's (xenstructs/).
 *
 * Rules kept here: nothing in crash may longjmp through Python (readmem is called with
 * RETURN_ON_ERROR|QUIET, symbols are checked before symbol_value(), and error(FATAL) is raised
 * only after Python returned); Ctrl-C during a command becomes a Python KeyboardInterrupt
 * instead of crash's longjmp; a Python failure is reported as a crash error, never fatal.
 *
 * Built by setup.sh:  gcc -shared -fPIC -DX86_64 -I/usr/include/crash $(python3-config --includes)
 *                     xenscope.c -o xenscope.so $(python3-config --embed --ldflags)
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <string.h>

#include "defs.h"

static PyObject *front;              /* crashext.front, or NULL when loading failed */
static char load_error[1024];        /* why loading failed (shown by every `xen` call) */
static char call_error[1024];        /* a Python exception that escaped crashext.front.invoke */
static char **help_xen;              /* crash's help text for `xen`, built from the parsers */
static struct sigaction python_sigint;   /* Python's SIGINT handler, active only during a command */

static char *help_fallback[] = {
	"xen",
	"xenscope: Xen and x86 page-table analyses (not loaded)",
	"[subcommand] [options]",
	"  xenscope could not load its Python part; run `xen` to see why.",
	NULL
};

/* ------------------------------------------------------------------------------------------- */
/* The `_crash` module: crash's services, as Python sees them                                  */
/* ------------------------------------------------------------------------------------------- */

static PyObject *
py_readmem(PyObject *self, PyObject *args)
{
	unsigned long long addr;
	int memtype;
	Py_ssize_t size;
	PyObject *buf;

	if (!PyArg_ParseTuple(args, "Kin", &addr, &memtype, &size))
		return NULL;
	if (size < 0 || size > (64 << 20)) {
		PyErr_Format(PyExc_ValueError, "refusing to read %zd bytes", size);
		return NULL;
	}
	if (memtype != KVADDR && memtype != UVADDR && memtype != PHYSADDR && memtype != XENMACHADDR) {
		PyErr_Format(PyExc_ValueError, "unknown memory type %d", memtype);
		return NULL;
	}
	if (memtype == UVADDR && (!CURRENT_CONTEXT() || !CURRENT_CONTEXT()->mm_struct))
		Py_RETURN_NONE;
	buf = PyBytes_FromStringAndSize(NULL, size);
	if (!buf)
		return NULL;
	if (size && !readmem(addr, memtype, PyBytes_AS_STRING(buf), size, "xenscope",
			     RETURN_ON_ERROR | QUIET)) {
		Py_DECREF(buf);
		Py_RETURN_NONE;
	}
	return buf;
}

static PyObject *
py_kvtop(PyObject *self, PyObject *args)
{
	unsigned long va;
	physaddr_t pa;

	if (!PyArg_ParseTuple(args, "k", &va))
		return NULL;
	if (XEN_HYPER_MODE() || !kvtop(NULL, va, &pa, 0))
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(pa);
}

static PyObject *
py_symbol(PyObject *self, PyObject *args)
{
	char *name;

	if (!PyArg_ParseTuple(args, "s", &name))
		return NULL;
	if (!symbol_exists(name))
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLong(symbol_value(name));
}

static PyObject *
datatype(PyObject *args, struct datatype_member *request, int need_member)
{
	char *name, *member = NULL;
	long v;

	if (!PyArg_ParseTuple(args, need_member ? "ss" : "s|z", &name, &member))
		return NULL;
	v = datatype_info(name, member, request);
	if (v < 0)
		Py_RETURN_NONE;
	return PyLong_FromLong(v);
}

static PyObject *
py_member_offset(PyObject *self, PyObject *args)
{
	return datatype(args, NULL, 1);
}

static PyObject *
py_member_size(PyObject *self, PyObject *args)
{
	return datatype(args, MEMBER_SIZE_REQUEST, 1);
}

static PyObject *
py_struct_size(PyObject *self, PyObject *args)
{
	return datatype(args, STRUCT_SIZE_REQUEST, 0);
}

static PyObject *
py_vmcoreinfo(PyObject *self, PyObject *args)
{
	char *key, *value;
	PyObject *ret;

	if (!PyArg_ParseTuple(args, "s", &key))
		return NULL;
	if (!pc->read_vmcoreinfo)
		Py_RETURN_NONE;
	value = pc->read_vmcoreinfo(key);
	if (!value)
		Py_RETURN_NONE;
	ret = PyUnicode_DecodeUTF8(value, strlen(value), "replace");
	free(value);
	return ret;
}

static void
put_u64(PyObject *d, const char *key, unsigned long long v)
{
	PyObject *o = PyLong_FromUnsignedLongLong(v);

	if (o) {
		PyDict_SetItemString(d, key, o);
		Py_DECREF(o);
	}
}

static PyObject *
py_qemu_cpu(PyObject *self, PyObject *args)
{
	int cpu;
	QEMUCPUState *s = NULL;
	PyObject *d;

	if (!PyArg_ParseTuple(args, "i", &cpu))
		return NULL;
	if (cpu < 0)
		Py_RETURN_NONE;
#ifdef X86_64
	if (KDUMP_DUMPFILE() || NETDUMP_DUMPFILE())
		s = kdump_get_qemucpustate(cpu);
	else if (DISKDUMP_DUMPFILE())
		s = diskdump_get_qemucpustate(cpu);
#endif
	if (!s)
		Py_RETURN_NONE;
	if (!(d = PyDict_New()))
		return NULL;
	put_u64(d, "rax", s->rax); put_u64(d, "rbx", s->rbx); put_u64(d, "rcx", s->rcx);
	put_u64(d, "rdx", s->rdx); put_u64(d, "rsi", s->rsi); put_u64(d, "rdi", s->rdi);
	put_u64(d, "rsp", s->rsp); put_u64(d, "rbp", s->rbp); put_u64(d, "r8", s->r8);
	put_u64(d, "r9", s->r9); put_u64(d, "r10", s->r10); put_u64(d, "r11", s->r11);
	put_u64(d, "r12", s->r12); put_u64(d, "r13", s->r13); put_u64(d, "r14", s->r14);
	put_u64(d, "r15", s->r15); put_u64(d, "rip", s->rip); put_u64(d, "rflags", s->rflags);
	put_u64(d, "cs", s->cs.selector); put_u64(d, "ss", s->ss.selector);
	put_u64(d, "cr0", s->cr[0]); put_u64(d, "cr2", s->cr[2]); put_u64(d, "cr3", s->cr[3]);
	put_u64(d, "cr4", s->cr[4]);
	return d;
}

static PyObject *
py_context(PyObject *self, PyObject *args)
{
	struct task_context *tc = CURRENT_CONTEXT();

	if (XEN_HYPER_MODE() || !tc)
		Py_RETURN_NONE;
	return Py_BuildValue("{s:k,s:k,s:s,s:i,s:k}", "task", tc->task, "pid", tc->pid,
			     "comm", tc->comm, "cpu", tc->processor, "mm", tc->mm_struct);
}

static PyObject *
py_info(PyObject *self, PyObject *args)
{
	const char *fmt = NETDUMP_DUMPFILE() ? "ELF (netdump)" : KDUMP_DUMPFILE() ? "ELF vmcore" :
		DISKDUMP_DUMPFILE() ? "kdump-compressed" : "other";

	return Py_BuildValue("{s:z,s:z,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:k,s:k,s:i,s:i}",
		"namelist", pc->namelist, "dumpfile", pc->dumpfile, "machine", MACHINE_TYPE,
		"format", fmt, "xen_hyper", XEN_HYPER_MODE() ? 1 : 0, "xen", XEN() ? 1 : 0,
		"xen_core", XEN_CORE_DUMPFILE() ? 1 : 0,
		"minimal", (pc->flags & MINIMAL_MODE) ? 1 : 0, "cpus", XEN_HYPER_MODE() ? 0 : kt->cpus,
		"relocate", XEN_HYPER_MODE() ? 0 : kt->relocate,
		"kernel_pgd", XEN_HYPER_MODE() ? 0 : vt->kernel_pgd[0],
		"la57", (machdep->flags & VM_5LEVEL) ? 1 : 0, "pagesize", (int)PAGESIZE());
}

static PyObject *
py_write(PyObject *self, PyObject *args)
{
	const char *text;
	Py_ssize_t n;

	if (!PyArg_ParseTuple(args, "s#", &text, &n))
		return NULL;
	if (n && fwrite(text, 1, n, fp) != (size_t)n) {
		clearerr(fp);
		PyErr_SetString(PyExc_BrokenPipeError, "crash's output stream is closed");
		return NULL;
	}
	return PyLong_FromSsize_t(n);
}

static PyObject *
py_flush(PyObject *self, PyObject *args)
{
	fflush(fp);
	Py_RETURN_NONE;
}

static PyMethodDef crash_methods[] = {
	{"readmem", py_readmem, METH_VARARGS,
	 "readmem(addr, memtype, size) -> bytes, or None when crash cannot read it"},
	{"kvtop", py_kvtop, METH_VARARGS, "kvtop(va) -> crash's physical address of a kernel va, or None"},
	{"symbol", py_symbol, METH_VARARGS, "symbol(name) -> address (crash's, relocated) or None"},
	{"member_offset", py_member_offset, METH_VARARGS, "member_offset(struct, member) -> int or None"},
	{"member_size", py_member_size, METH_VARARGS, "member_size(struct, member) -> int or None"},
	{"struct_size", py_struct_size, METH_VARARGS, "struct_size(name) -> int or None"},
	{"vmcoreinfo", py_vmcoreinfo, METH_VARARGS, "vmcoreinfo(key) -> text or None"},
	{"qemu_cpu", py_qemu_cpu, METH_VARARGS, "qemu_cpu(n) -> registers of CPU n from QEMU notes, or None"},
	{"context", py_context, METH_NOARGS, "context() -> crash's current task context, or None"},
	{"info", py_info, METH_NOARGS, "info() -> what crash has open"},
	{"write", py_write, METH_VARARGS, "write(text): to crash's output stream (pipes, redirection)"},
	{"flush", py_flush, METH_NOARGS, "flush crash's output stream"},
	{NULL, NULL, 0, NULL}
};

static struct PyModuleDef crash_module = {
	PyModuleDef_HEAD_INIT, "_crash", "crash's services for xenscope (crashext/xenscope.c)", -1,
	crash_methods
};

static PyObject *
make_module(void)
{
	PyObject *m = PyModule_Create(&crash_module);

	if (!m)
		return NULL;
	PyModule_AddIntConstant(m, "KVADDR", KVADDR);
	PyModule_AddIntConstant(m, "UVADDR", UVADDR);
	PyModule_AddIntConstant(m, "PHYSADDR", PHYSADDR);
	PyModule_AddIntConstant(m, "XENMACHADDR", XENMACHADDR);
	return m;
}

/* ------------------------------------------------------------------------------------------- */
/* Loading                                                                                     */
/* ------------------------------------------------------------------------------------------- */

static void
python_error(char *out, size_t len, const char *what)
{
	PyObject *type, *value, *tb, *s = NULL;
	const char *text = NULL;

	PyErr_Fetch(&type, &value, &tb);
	if (value)
		s = PyObject_Str(value);
	if (s)
		text = PyUnicode_AsUTF8(s);
	snprintf(out, len, "%s%s%s", what, text ? ": " : "", text ? text : "");
	PyErr_Clear();
	Py_XDECREF(s);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
}

static int
start_python(void)
{
	PyConfig config;
	PyStatus status;
	struct sigaction int_old, pipe_old, xfsz_old;

	if (Py_IsInitialized())
		return 0;
	/* Python's C extensions (numpy) need libpython's symbols in the global scope */
	dlopen(PYTHON_LIBRARY, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
	sigaction(SIGINT, NULL, &int_old);
	sigaction(SIGPIPE, NULL, &pipe_old);
	sigaction(SIGXFSZ, NULL, &xfsz_old);
	signal(SIGINT, SIG_DFL);                /* Python installs its handler only over SIG_DFL */
	PyConfig_InitIsolatedConfig(&config);
	config.install_signal_handlers = 1;     /* for Ctrl-C: swapped in only around a command */
	config.site_import = 1;
	status = PyConfig_SetString(&config, &config.program_name, L"/usr/bin/python3");
	if (!PyStatus_Exception(status))
		status = Py_InitializeFromConfig(&config);
	PyConfig_Clear(&config);
	sigaction(SIGINT, NULL, &python_sigint);
	sigaction(SIGINT, &int_old, NULL);      /* crash keeps its own handlers */
	sigaction(SIGPIPE, &pipe_old, NULL);
	sigaction(SIGXFSZ, &xfsz_old, NULL);
	if (PyStatus_Exception(status)) {
		snprintf(load_error, sizeof(load_error), "cannot start Python: %s",
			 status.err_msg ? status.err_msg : "unknown error");
		return -1;
	}
	return 0;
}

/* The checkout: this file is <checkout>/crashext/xenscope.so */
static int
find_checkout(char *out, size_t len)
{
	Dl_info info;
	char real[PATH_MAX], *dir;

	if (!dladdr((void *)find_checkout, &info) || !info.dli_fname ||
	    !realpath(info.dli_fname, real))
		return -1;
	dir = dirname(dirname(real));
	snprintf(out, len, "%s", dir);
	return 0;
}

static char **
build_help(PyObject *lines)
{
	Py_ssize_t i, n = PyList_Size(lines);
	char **h = calloc(n + 1, sizeof(char *));

	if (!h)
		return NULL;
	for (i = 0; i < n; i++) {
		const char *s = PyUnicode_AsUTF8(PyList_GetItem(lines, i));
		h[i] = strdup(s ? s : "");
	}
	return h;
}

static void
load_front(void)
{
	char checkout[PATH_MAX];
	PyObject *sys_path, *dir, *mod, *boot, *res, *lines;

	if (start_python() < 0)
		return;
	if (find_checkout(checkout, sizeof(checkout)) < 0) {
		snprintf(load_error, sizeof(load_error), "cannot find the xenscope checkout of this .so");
		return;
	}
	mod = make_module();
	if (!mod || PyDict_SetItemString(PyImport_GetModuleDict(), "_crash", mod) < 0) {
		Py_XDECREF(mod);
		python_error(load_error, sizeof(load_error), "cannot create the _crash module");
		return;
	}
	Py_DECREF(mod);
	sys_path = PySys_GetObject("path");
	dir = PyUnicode_FromString(checkout);
	if (!sys_path || !dir || PyList_Insert(sys_path, 0, dir) < 0) {
		Py_XDECREF(dir);
		python_error(load_error, sizeof(load_error), "cannot set sys.path");
		return;
	}
	Py_DECREF(dir);
	/* crashext.boot finds the venv (same rules as gdb's loader), then imports crashext.front */
	boot = PyImport_ImportModule("crashext.boot");
	if (!boot) {
		python_error(load_error, sizeof(load_error), "cannot import crashext.boot");
		return;
	}
	res = PyObject_CallMethod(boot, "load", "s", checkout);
	Py_DECREF(boot);
	if (!res) {
		python_error(load_error, sizeof(load_error), "loading failed");
		return;
	}
	if (PyUnicode_Check(res)) {               /* a reason not to load */
		snprintf(load_error, sizeof(load_error), "%s", PyUnicode_AsUTF8(res));
		Py_DECREF(res);
		return;
	}
	front = res;
	lines = PyObject_CallMethod(front, "help_lines", NULL);
	if (lines && PyList_Check(lines))
		help_xen = build_help(lines);
	else
		PyErr_Clear();
	Py_XDECREF(lines);
}

/* ------------------------------------------------------------------------------------------- */
/* The command                                                                                 */
/* ------------------------------------------------------------------------------------------- */

static void
cmd_xen(void)
{
	PyObject *argv, *res;
	struct sigaction crash_sigint;
	char *msg = NULL;
	int i;

	if (!front)
		error(FATAL, "xenscope is not loaded: %s\n", load_error);
	argv = PyList_New(0);
	for (i = 1; argv && i < argcnt; i++) {
		PyObject *s = PyUnicode_DecodeUTF8(args[i], strlen(args[i]), "surrogateescape");
		if (!s || PyList_Append(argv, s) < 0) {
			Py_XDECREF(s);
			Py_CLEAR(argv);
			break;
		}
		Py_DECREF(s);
	}
	sigaction(SIGINT, &python_sigint, &crash_sigint);
	res = argv ? PyObject_CallMethod(front, "invoke", "O", argv) : NULL;
	sigaction(SIGINT, &crash_sigint, NULL);
	Py_XDECREF(argv);
	if (!res) {
		python_error(call_error, sizeof(call_error), "xenscope internal error");
		msg = GETBUF(strlen(call_error) + 1);
		strcpy(msg, call_error);
	} else if (PyUnicode_Check(res)) {
		const char *s = PyUnicode_AsUTF8(res);
		msg = GETBUF(strlen(s ? s : "") + 1);
		strcpy(msg, s ? s : "");
	}
	Py_XDECREF(res);
	fflush(fp);
	if (msg)
		error(FATAL, "%s\n", msg);      /* after Python returned: crash's longjmp is safe here */
}

static struct command_table_entry command_table[] = {
	{"xen", cmd_xen, NULL, MINIMAL},
	{NULL, NULL, NULL, 0}
};

void __attribute__((constructor))
xenscope_init(void)
{
	load_front();
	command_table[0].help_data = help_xen ? help_xen : help_fallback;
	if (!front)
		fprintf(fp, "xenscope: not loaded: %s\n", load_error);
	register_extension(command_table);
}

void __attribute__((destructor))
xenscope_fini(void)
{
	/* `extend -u`: Python stays up (it cannot be restarted reliably), but nothing may keep a
	 * pointer into this object once it is unmapped: drop the _crash module and the front. */
	if (!Py_IsInitialized())
		return;
	if (front) {
		PyObject *r = PyObject_CallMethod(front, "detach", NULL);
		Py_XDECREF(r);
		PyErr_Clear();
		Py_CLEAR(front);
	}
	PyDict_DelItemString(PyImport_GetModuleDict(), "_crash");
	PyErr_Clear();
	PyGC_Collect();
}
