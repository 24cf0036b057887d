//! The thread count used by the crate's parallel kernels (GEMM, batched matmul).
//!
//! Parallel work runs on a rayon pool owned by this crate, sized by
//! [`set_num_threads`] (default: the number of CPUs, or `TESSERA_NUM_THREADS` when set),
//! so a caller's own rayon pool is left alone.

use std::sync::{Arc, OnceLock, RwLock};

use rayon::ThreadPool;

struct Pool {
    threads: usize,
    pool: Arc<ThreadPool>,
}

static POOL: OnceLock<RwLock<Pool>> = OnceLock::new();

fn default_threads() -> usize {
    std::env::var("TESSERA_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn build(threads: usize) -> Pool {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("tessera-{i}"))
        .build()
        .or_else(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
        .expect("a one-thread pool can always be built");
    Pool {
        threads: pool.current_num_threads(),
        pool: Arc::new(pool),
    }
}

fn pool() -> &'static RwLock<Pool> {
    POOL.get_or_init(|| RwLock::new(build(default_threads())))
}

/// Sets the number of threads the crate's kernels use (at least 1).
///
/// ```
/// tessera_tensor::set_num_threads(1);
/// assert_eq!(tessera_tensor::num_threads(), 1);
/// ```
pub fn set_num_threads(threads: usize) {
    let threads = threads.max(1);
    let lock = pool();
    if lock.read().map(|p| p.threads == threads).unwrap_or(false) {
        return;
    }
    let fresh = build(threads);
    match lock.write() {
        Ok(mut p) => *p = fresh,
        Err(poisoned) => *poisoned.into_inner() = fresh,
    }
}

/// The number of threads the crate's kernels use.
pub fn num_threads() -> usize {
    match pool().read() {
        Ok(p) => p.threads,
        Err(poisoned) => poisoned.into_inner().threads,
    }
}

/// Runs `f` inside the crate's pool; returns the thread count along with the pool.
pub(crate) fn install<R: Send>(f: impl FnOnce(usize) -> R + Send) -> R {
    let (threads, pool) = match pool().read() {
        Ok(p) => (p.threads, Arc::clone(&p.pool)),
        Err(poisoned) => {
            let p = poisoned.into_inner();
            (p.threads, Arc::clone(&p.pool))
        }
    };
    if threads == 1 {
        return f(1);
    }
    pool.install(|| f(threads))
}
