// SPDX-License-Identifier: GPL-2.0
/*
 * Offsets of the struct task_struct fields the module reads, computed by
 * the C compiler as asm-offsets computes them: bindgen's layout of
 * task_struct can be short (measured on 7.3.4: 48 bytes before `policy`),
 * so the bindings' offsets are not used for it. Kbuild turns the
 * generated assembly into task_offsets.rs.
 */
#include <linux/kbuild.h>
#include <linux/sched.h>

void task_offsets(void);

void task_offsets(void)
{
	OFFSET(POLICY, task_struct, policy);
	OFFSET(STATIC_PRIO, task_struct, static_prio);
#ifdef CONFIG_PREEMPT_RCU
	OFFSET(RCU_READ_LOCK_NESTING, task_struct, rcu_read_lock_nesting);
#endif
#ifdef CONFIG_TRACE_IRQFLAGS
	OFFSET(HARDIRQ_THREADED, task_struct, hardirq_threaded);
	OFFSET(SOFTIRQ_CONTEXT, task_struct, softirq_context);
	OFFSET(IRQ_CONFIG, task_struct, irq_config);
#endif
#ifdef CONFIG_LOCKDEP
	OFFSET(LOCKDEP_RECURSION, task_struct, lockdep_recursion);
#endif
#ifdef CONFIG_PREEMPT_RT
	OFFSET(SOFTIRQ_DISABLE_CNT, task_struct, softirq_disable_cnt);
#endif
}
