//! xenopsd's per-VM queues and XAPI's tasks.
//!
//! Every lifecycle operation on a VM waits for its [`VmQueues::enter`] turn: two callers
//! never race on one VM (the second sees the state the first left), while operations on
//! different VMs run side by side. An `Async.*` call runs as a `task` object; the operation
//! finds its task through [`current`] (progress, cancellation) on the thread running it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

/// XAPI's error when an operation stops because its task was cancelled: `[task]`.
pub const TASK_CANCELLED: &str = "TASK_CANCELLED";

/// One queue of operations per VM: a VM runs one operation at a time, VMs in parallel.
#[derive(Debug, Default)]
pub struct VmQueues {
    busy: Mutex<HashSet<String>>,
    free: Condvar,
}

/// A VM's turn: the VM's next operation waits until this is dropped.
#[derive(Debug)]
pub struct VmTurn<'a> {
    queues: &'a VmQueues,
    vm: String,
}

impl VmQueues {
    /// Waits until no other operation holds `vm`, then holds it.
    pub fn enter(&self, vm: &str) -> VmTurn<'_> {
        let mut busy = self.busy.lock();
        while busy.contains(vm) {
            self.free.wait(&mut busy);
        }
        busy.insert(vm.to_owned());
        VmTurn {
            queues: self,
            vm: vm.to_owned(),
        }
    }

    /// Whether an operation holds `vm` now.
    pub fn is_busy(&self, vm: &str) -> bool {
        self.busy.lock().contains(vm)
    }
}

impl Drop for VmTurn<'_> {
    fn drop(&mut self) {
        self.queues.busy.lock().remove(&self.vm);
        self.queues.free.notify_all();
    }
}

/// The running task a thread works for.
#[derive(Debug, Clone)]
pub struct TaskCtx {
    /// The task's reference.
    pub task: String,
    cancel: Arc<AtomicBool>,
}

impl TaskCtx {
    /// Whether `task.cancel` was called.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<TaskCtx>> = const { RefCell::new(None) };
}

/// The task the calling thread works for (`None` for a synchronous call).
pub fn current() -> Option<TaskCtx> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Cancellation flags of the tasks that run now.
#[derive(Debug, Default)]
pub struct Tasks {
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl Tasks {
    /// Registers `task` as running; run its work inside [`Tasks::run_as`].
    pub fn register(&self, task: &str) -> TaskCtx {
        let cancel = Arc::new(AtomicBool::new(false));
        self.running.lock().insert(task.to_owned(), cancel.clone());
        TaskCtx {
            task: task.to_owned(),
            cancel,
        }
    }

    /// Runs `f` on this thread as `ctx`'s work; the task is no longer running afterwards.
    pub fn run_as<T>(&self, ctx: TaskCtx, f: impl FnOnce() -> T) -> T {
        let task = ctx.task.clone();
        CURRENT.with(|c| *c.borrow_mut() = Some(ctx));
        let out = f();
        CURRENT.with(|c| *c.borrow_mut() = None);
        self.running.lock().remove(&task);
        out
    }

    /// Asks a running task to stop; `false` when `task` is not running.
    pub fn cancel(&self, task: &str) -> bool {
        match self.running.lock().get(task) {
            Some(flag) => {
                flag.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_vm_one_operation_at_a_time_and_vms_in_parallel() {
        let q = Arc::new(VmQueues::default());
        let a = q.enter("vm-a");
        // Another VM is not held up.
        drop(q.enter("vm-b"));
        assert!(q.is_busy("vm-a") && !q.is_busy("vm-b"));
        let (tx, rx) = std::sync::mpsc::channel();
        let q2 = q.clone();
        let waiter = std::thread::spawn(move || {
            let _t = q2.enter("vm-a");
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(a);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        assert!(!q.is_busy("vm-a"));
    }

    #[test]
    fn cancel_reaches_the_running_task_only() {
        let t = Tasks::default();
        let ctx = t.register("OpaqueRef:t1");
        assert!(!t.cancel("OpaqueRef:other"));
        assert!(t.cancel("OpaqueRef:t1"));
        let seen = t.run_as(ctx, || current().map(|c| (c.task.clone(), c.cancelled())));
        assert_eq!(seen, Some(("OpaqueRef:t1".to_owned(), true)));
        assert!(current().is_none());
        // Finished: no longer cancellable.
        assert!(!t.cancel("OpaqueRef:t1"));
    }
}
