// SPDX-License-Identifier: GPL-2.0
/*
 * lab_fault: fault injection for the selfheal hang lab.
 *
 * Loaded ONLY inside the throw-away QEMU guest, never on a real machine:
 * every fault here hangs a CPU or the whole kernel on purpose and none of
 * them can be undone (the module cannot be unloaded once a fault runs).
 *
 *   insmod lab_fault.ko fault=<name> [cpu=N] [leak_mb_per_s=M]
 *
 * fault=irq_loop       kthread bound to cpu spins with local interrupts off
 * fault=preempt_loop   kthread bound to cpu spins with preemption off
 * fault=kthread_loop   kthread bound to cpu spins with preemption on (boot
 *                      with preempt=full for it to be truly preemptible)
 * fault=spin_self      kthread bound to cpu takes the same spinlock twice
 * fault=spin_abba      two kthreads (cpu 0 and 1) take two locks in
 *                      opposite order: every CPU of a 2-CPU guest spins
 * fault=d_state        creates /proc/lab_fault_block: the first reader takes
 *                      a mutex and waits uninterruptibly on a completion that
 *                      is never completed; every later reader blocks
 *                      uninterruptibly on the mutex behind it (a cascade)
 * fault=kmem_leak      kthread allocates pages it never frees until the
 *                      machine starves
 *
 * Each fault announces itself with one "lab_fault: <name> started" line so
 * the lab's log parser can check the injection really happened.
 */
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/gfp.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/spinlock.h>

static char *fault = "";
module_param(fault, charp, 0444);
MODULE_PARM_DESC(fault, "fault class to inject (see the source header)");

static int cpu = 1;
module_param(cpu, int, 0444);
MODULE_PARM_DESC(cpu, "CPU the fault runs on (default 1)");

static int leak_mb_per_s = 64;
module_param(leak_mb_per_s, int, 0444);
MODULE_PARM_DESC(leak_mb_per_s, "kmem_leak: leak rate in MiB per second");

static DEFINE_SPINLOCK(lock_a);
static DEFINE_SPINLOCK(lock_b);
static DEFINE_MUTEX(block_mutex);
static DECLARE_COMPLETION(never_done);
static struct proc_dir_entry *block_entry;

/* volatile so the compiler keeps the loops (they must never end). */
static volatile int spin_forever = 1;

static int irq_loop_fn(void *unused)
{
	pr_info("lab_fault: irq_loop started on cpu %d\n", smp_processor_id());
	local_irq_disable();
	while (spin_forever)
		cpu_relax();
	local_irq_enable();
	return 0;
}

static int preempt_loop_fn(void *unused)
{
	pr_info("lab_fault: preempt_loop started on cpu %d\n", smp_processor_id());
	preempt_disable();
	while (spin_forever)
		cpu_relax();
	preempt_enable();
	return 0;
}

static int kthread_loop_fn(void *unused)
{
	pr_info("lab_fault: kthread_loop started on cpu %d (preemptible)\n",
		smp_processor_id());
	/* No cond_resched(): only involuntary preemption can take the CPU. */
	while (spin_forever)
		cpu_relax();
	return 0;
}

static int spin_self_fn(void *unused)
{
	pr_info("lab_fault: spin_self started on cpu %d\n", smp_processor_id());
	spin_lock(&lock_a);
	spin_lock(&lock_a); /* never returns */
	spin_unlock(&lock_a);
	spin_unlock(&lock_a);
	return 0;
}

static atomic_t abba_ready = ATOMIC_INIT(0);

static int abba_fn(void *data)
{
	spinlock_t *first = data ? &lock_b : &lock_a;
	spinlock_t *second = data ? &lock_a : &lock_b;

	pr_info("lab_fault: spin_abba started on cpu %d\n", smp_processor_id());
	spin_lock(first);
	/* Both threads hold their first lock before either asks for the second. */
	atomic_inc(&abba_ready);
	while (atomic_read(&abba_ready) < 2)
		cpu_relax();
	spin_lock(second); /* never returns */
	spin_unlock(second);
	spin_unlock(first);
	return 0;
}

static ssize_t block_read(struct file *file, char __user *buf, size_t len,
			  loff_t *off)
{
	/* mutex_lock and wait_for_completion both sleep in TASK_UNINTERRUPTIBLE. */
	mutex_lock(&block_mutex);
	pr_info("lab_fault: d_state holder %s:%d waits forever\n", current->comm,
		task_pid_nr(current));
	wait_for_completion(&never_done);
	mutex_unlock(&block_mutex);
	return 0;
}

static const struct proc_ops block_ops = {
	.proc_read = block_read,
};

static int kmem_leak_fn(void *unused)
{
	/* Order-0 pages, so nothing but exhaustion makes an allocation fail. */
	unsigned long per_tick = (unsigned long)leak_mb_per_s * 256 / 10;
	unsigned long leaked = 0, i;

	pr_info("lab_fault: kmem_leak started, %d MiB/s\n", leak_mb_per_s);
	for (;;) {
		for (i = 0; i < per_tick; i++) {
			if (alloc_page(GFP_KERNEL | __GFP_NOWARN))
				leaked++;
		}
		if (leaked % (256 * 64) < per_tick)
			pr_info("lab_fault: kmem_leak %lu MiB leaked\n", leaked / 256);
		msleep(100);
	}
	return 0;
}

static struct task_struct *create_on_cpu(int (*fn)(void *), void *data,
					 int on_cpu, const char *name)
{
	struct task_struct *t;

	if (on_cpu < 0 || on_cpu >= nr_cpu_ids || !cpu_online(on_cpu)) {
		pr_err("lab_fault: cpu %d is not online\n", on_cpu);
		return ERR_PTR(-EINVAL);
	}
	t = kthread_create(fn, data, "%s/%d", name, on_cpu);
	if (!IS_ERR(t))
		kthread_bind(t, on_cpu);
	return t;
}

static int start_on_cpu(int (*fn)(void *), void *data, int on_cpu,
			const char *name)
{
	struct task_struct *t = create_on_cpu(fn, data, on_cpu, name);

	if (IS_ERR(t))
		return PTR_ERR(t);
	wake_up_process(t);
	return 0;
}

static int __init lab_fault_init(void)
{
	if (!strcmp(fault, "irq_loop"))
		return start_on_cpu(irq_loop_fn, NULL, cpu, "lab_irq_loop");
	if (!strcmp(fault, "preempt_loop"))
		return start_on_cpu(preempt_loop_fn, NULL, cpu, "lab_preempt_loop");
	if (!strcmp(fault, "kthread_loop"))
		return start_on_cpu(kthread_loop_fn, NULL, cpu, "lab_kthread_loop");
	if (!strcmp(fault, "spin_self"))
		return start_on_cpu(spin_self_fn, NULL, cpu, "lab_spin_self");
	if (!strcmp(fault, "spin_abba")) {
		if (num_online_cpus() < 2) {
			pr_err("lab_fault: spin_abba needs two CPUs\n");
			return -EINVAL;
		}
		struct task_struct *a, *b;

		/*
		 * Create both before waking either: once the first holds its lock
		 * with preemption off, its CPU runs nothing else, and creating the
		 * second thread could need that CPU.
		 */
		a = create_on_cpu(abba_fn, NULL, 0, "lab_abba");
		if (IS_ERR(a))
			return PTR_ERR(a);
		b = create_on_cpu(abba_fn, (void *)1, 1, "lab_abba");
		if (IS_ERR(b)) {
			kthread_stop(a);
			return PTR_ERR(b);
		}
		wake_up_process(b);
		wake_up_process(a);
		return 0;
	}
	if (!strcmp(fault, "d_state")) {
		block_entry = proc_create("lab_fault_block", 0444, NULL, &block_ops);
		if (!block_entry)
			return -ENOMEM;
		pr_info("lab_fault: d_state armed: readers of /proc/lab_fault_block block forever\n");
		return 0;
	}
	if (!strcmp(fault, "kmem_leak")) {
		struct task_struct *t = kthread_run(kmem_leak_fn, NULL, "lab_kmem_leak");

		return PTR_ERR_OR_ZERO(t);
	}
	pr_err("lab_fault: unknown fault '%s'\n", fault);
	return -EINVAL;
}

static void __exit lab_fault_exit(void)
{
	/* Only reached when no fault ran (init failed) or for d_state before use. */
	if (block_entry)
		proc_remove(block_entry);
}

module_init(lab_fault_init);
module_exit(lab_fault_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("selfheal hang lab: kernel fault injection (guest only)");
