//! The runtime that pushes: every WebSocket's task and the fan-out run here,
//! on threads of their own, apart from the runtime that accepts connections
//! and answers HTTP. A fan-out to a thousand sockets wakes a thousand tasks;
//! on one runtime a webhook's request waited behind all of them in the
//! workers' queues, once to be read and again to be answered. Here the
//! webhook's request and its ack have workers with nothing else queued, and
//! wait only for the kernel to give them a core, and the pushers leave one
//! core to them.
//!
//! One runtime per process, started on first use and never stopped: tests
//! start many servers in one process, and a runtime cannot be dropped from
//! inside another's task. Its tasks end with their sockets and servers.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// The pushing runtime's handle: spawn socket and fan-out tasks on it. If
/// its threads cannot be started, the caller's runtime does the pushing.
pub fn handle() -> Handle {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .thread_name("hookcast-push")
            .worker_threads(push_threads())
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "cannot start the push runtime; sockets share the HTTP runtime"))
            .ok()
    });
    match runtime {
        Some(rt) => rt.handle().clone(),
        None => Handle::current(),
    }
}

/// Pushing threads: one per core but one, at least one. The core left
/// over is the webhooks' (and the rest of the machine's): with a pusher on
/// every core of a 2-core box, the ack's p99 under a fan-out to 1,000
/// sockets was 8 to 12 ms, with one 6 to 7 ms, and the fan-out itself was as
/// fast or faster, since the pushers no longer fought the other threads for
/// both cores (BENCHMARKS.md).
fn push_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// The slice the answering threads ask for (EEVDF's `sched_runtime`).
const ANSWER_SLICE_NS: u64 = 100_000;

/// Called on each thread that answers webhooks (the HTTP runtime's workers,
/// the store's writer): asks the kernel for a short slice, so that when one
/// wakes (a request arrived, a commit is done) it runs ahead of a pusher in
/// the middle of its slice, at the same share of the CPU. Linux 6.12 and
/// later (EEVDF custom slices, no privilege needed); elsewhere, or if the
/// kernel refuses, nothing changes.
pub fn answer_promptly() {
    #[cfg(target_os = "linux")]
    unsafe {
        let attr = libc::sched_attr {
            size: std::mem::size_of::<libc::sched_attr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: 0,
            // sched_setattr sets the nice value too: keep the thread's own.
            sched_nice: libc::getpriority(libc::PRIO_PROCESS, 0),
            sched_priority: 0,
            sched_runtime: ANSWER_SLICE_NS,
            sched_deadline: 0,
            sched_period: 0,
        };
        libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0);
    }
}

/// At most one malloc arena per core (glibc's default is eight per core),
/// unless `MALLOC_ARENA_MAX` says otherwise: each socket's memory is
/// allocated on the push threads and freed there and on the HTTP workers,
/// and with an arena per thread an idle socket cost 7.2 KB instead of 6.8
/// (10,000 sockets, BENCHMARKS.md). Call before any other thread starts.
pub fn one_arena_per_core() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        // SAFETY: mallopt only sets a tunable; called while single-threaded.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, cores as libc::c_int) };
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The kernel took the request: this thread's slice is the short one
    /// (checked where the kernel has custom slices, 6.12 on, and shows them).
    #[test]
    fn an_answering_thread_gets_the_short_slice() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        let slice = std::thread::spawn(|| {
            super::answer_promptly();
            let sched = std::fs::read_to_string("/proc/thread-self/sched").unwrap_or_default();
            sched.lines().find(|l| l.starts_with("se.slice")).and_then(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
        })
        .join()
        .unwrap();
        match slice {
            Some(ns) if (major, minor) >= (6, 12) => assert_eq!(ns, super::ANSWER_SLICE_NS),
            _ => eprintln!("kernel {} shows no custom slices; nothing to check", release.trim()),
        }
    }
}
