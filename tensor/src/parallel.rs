//! The threads of the crate's parallel kernels (GEMM, batched matmul).
//!
//! Work is cut into tasks that the calling thread and a small team of helper threads
//! (one fewer than the thread count) take one by one from a shared counter, so the
//! threads that are ready do the work when another is slow to start. After
//! a task a helper keeps polling for the next one for a short while ([`SPIN`]) before it
//! sleeps, as OpenMP runtimes do: in a training loop operations follow each other within
//! microseconds, and waking a sleeping thread costs tens of microseconds, as much as a
//! whole 256 x 256 product. The count is set by [`set_num_threads`] (default: the number
//! of CPUs, or `TESSERA_NUM_THREADS` when set).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper polls for new work before it sleeps.
const SPIN: Duration = Duration::from_micros(500);

/// The work a helper is handed: a task function, the number of tasks and the counter
/// from which every participant takes the next task index.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    next: *const AtomicUsize,
    tasks: usize,
}

/// Runs tasks `next.fetch_add(1)` until they are all taken.
fn take_tasks(f: &(dyn Fn(usize) + Sync), next: &AtomicUsize, tasks: usize) {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= tasks {
            return;
        }
        f(i);
    }
}

/// One helper's mailbox.
struct Slot {
    /// Incremented by the caller when it posts a job.
    posted: AtomicUsize,
    /// Set to a job's ticket by whoever claims it first: the helper (it runs the job)
    /// or the caller (the caller took every task itself, and the helper skips the job
    /// without touching it, so a helper slow to wake costs the caller nothing).
    claimed: AtomicUsize,
    /// Set to `posted` by the helper when the job is done.
    done: AtomicUsize,
    /// Whether the job panicked.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    job: UnsafeCell<Option<Job>>,
}

impl Slot {
    /// Claims job `ticket` for the helper (to run it) or for the caller (to withdraw
    /// it); true for whichever comes first.
    fn claim(&self, ticket: usize) -> bool {
        self.claimed
            .compare_exchange(
                ticket.wrapping_sub(1),
                ticket,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

// SAFETY: `job` is written by the caller only while the helper is idle (before `posted`
// is bumped, with release ordering) and read by the helper only after it saw the bump
// (acquire); the function it points to is `Sync` and outlives the job (the caller waits
// for `done`).
unsafe impl Send for Slot {}
unsafe impl Sync for Slot {}

struct Helper {
    slot: Arc<Slot>,
    thread: Thread,
    handle: Option<JoinHandle<()>>,
}

struct Team {
    threads: usize,
    helpers: Vec<Helper>,
    /// One caller at a time uses the helpers; others (and nested calls) run serially.
    busy: Mutex<()>,
}

impl Drop for Team {
    fn drop(&mut self) {
        for h in &self.helpers {
            h.slot.shutdown.store(true, Ordering::Release);
            h.thread.unpark();
        }
        for h in &mut self.helpers {
            if let Some(handle) = h.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

fn helper_loop(slot: Arc<Slot>) {
    let mut seen = 0usize;
    loop {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            if slot.shutdown.load(Ordering::Acquire) {
                return;
            }
            if slot.posted.load(Ordering::Acquire) != seen {
                break;
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(64) && start.elapsed() > SPIN {
                std::thread::park_timeout(Duration::from_millis(100));
            } else {
                std::hint::spin_loop();
            }
        }
        seen = slot.posted.load(Ordering::Acquire);
        if !slot.claim(seen) {
            continue; // withdrawn by the caller
        }
        // SAFETY: the caller wrote the job before bumping `posted` and, since this helper
        // claimed it, keeps `f` alive until it sees `done == seen`.
        let job = unsafe { (*slot.job.get()).expect("a posted job") };
        let (f, next) = unsafe { (&*job.f, &*job.next) };
        let result = catch_unwind(AssertUnwindSafe(|| take_tasks(f, next, job.tasks)));
        if result.is_err() {
            slot.panicked.store(true, Ordering::Release);
        }
        slot.done.store(seen, Ordering::Release);
    }
}

impl Team {
    fn new(threads: usize) -> Team {
        let mut helpers = Vec::new();
        for i in 1..threads {
            let slot = Arc::new(Slot {
                posted: AtomicUsize::new(0),
                claimed: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                shutdown: AtomicBool::new(false),
                job: UnsafeCell::new(None),
            });
            let s = Arc::clone(&slot);
            let spawned = std::thread::Builder::new()
                .name(format!("tessera-{i}"))
                .spawn(move || helper_loop(s));
            match spawned {
                Ok(handle) => helpers.push(Helper {
                    slot,
                    thread: handle.thread().clone(),
                    handle: Some(handle),
                }),
                Err(_) => break, // fewer helpers than asked: still correct
            }
        }
        Team {
            threads: helpers.len() + 1,
            helpers,
            busy: Mutex::new(()),
        }
    }

    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let guard = match self.busy.try_lock() {
            Ok(g) if tasks > 1 && !self.helpers.is_empty() => g,
            _ => return (0..tasks).for_each(f),
        };
        let next = AtomicUsize::new(0);
        // SAFETY (lifetime): the helpers only use `f` and `next` until they mark the job
        // done, and this function waits for that before returning, even if `f` panics
        // here.
        let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let mut posted = Vec::with_capacity(self.helpers.len());
        for (w, h) in self.helpers.iter().enumerate() {
            if w + 1 >= tasks {
                break;
            }
            // SAFETY: the helper is idle (its previous job is done), so it does not read
            // the slot while it is written.
            unsafe {
                *h.slot.job.get() = Some(Job {
                    f: f_static,
                    next: &next,
                    tasks,
                });
            }
            let ticket = h.slot.posted.load(Ordering::Relaxed).wrapping_add(1);
            h.slot.posted.store(ticket, Ordering::Release);
            h.thread.unpark();
            posted.push((h, ticket));
        }
        let own = catch_unwind(AssertUnwindSafe(|| take_tasks(f, &next, tasks)));
        let mut helper_panicked = false;
        for (h, ticket) in posted {
            if h.slot.claim(ticket) {
                continue; // every task is taken; the helper never started this job
            }
            let mut polls = 0u32;
            while h.slot.done.load(Ordering::Acquire) != ticket {
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(1024) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            helper_panicked |= h.slot.panicked.swap(false, Ordering::AcqRel);
        }
        drop(guard);
        if let Err(payload) = own {
            resume_unwind(payload);
        }
        assert!(
            !helper_panicked,
            "a task panicked on a tessera helper thread"
        );
    }
}

static TEAM: OnceLock<RwLock<Arc<Team>>> = OnceLock::new();

fn default_threads() -> usize {
    std::env::var("TESSERA_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn team_lock() -> &'static RwLock<Arc<Team>> {
    TEAM.get_or_init(|| RwLock::new(Arc::new(Team::new(default_threads()))))
}

fn team() -> Arc<Team> {
    match team_lock().read() {
        Ok(t) => Arc::clone(&t),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    }
}

/// Sets the number of threads the crate's kernels use (at least 1), the calling thread
/// included.
///
/// ```
/// tessera_tensor::set_num_threads(1);
/// assert_eq!(tessera_tensor::num_threads(), 1);
/// ```
pub fn set_num_threads(threads: usize) {
    let threads = threads.max(1);
    if team().threads == threads {
        return;
    }
    let fresh = Arc::new(Team::new(threads));
    match team_lock().write() {
        Ok(mut t) => *t = fresh,
        Err(poisoned) => *poisoned.into_inner() = fresh,
    }
}

/// The number of threads the crate's kernels use.
pub fn num_threads() -> usize {
    team().threads
}

/// Runs `f(0)`, ..., `f(tasks - 1)` in parallel: the calling thread and the helpers take
/// the next task from a shared counter until none is left, so a helper that starts late
/// (asleep, or its core busy) takes fewer. Runs them all on the calling thread when the
/// helpers are busy with another caller, or for a nested call.
pub(crate) fn run_split(tasks: usize, f: impl Fn(usize) + Sync) {
    team().run(tasks, &f);
}

/// Runs `f(0)`, ..., `f(tasks - 1)` on the crate's thread team (see
/// [`set_num_threads`]): every thread, the calling one included, takes the next task
/// until none is left. A nested call, or a call while the helpers serve
/// another caller, runs every task on the calling thread, so `f` must not rely on the
/// tasks running at the same time.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// let sum = AtomicUsize::new(0);
/// tessera_tensor::parallel_for(4, |i| { sum.fetch_add(i, Ordering::Relaxed); });
/// assert_eq!(sum.into_inner(), 6);
/// ```
pub fn parallel_for(tasks: usize, f: impl Fn(usize) + Sync) {
    run_split(tasks, f);
}

/// Element-wise work below this many elements stays on the calling thread.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 16;

/// A vector of `n` elements whose chunks `fill(start, chunk)` computes, in parallel
/// when `n` is large; `chunk` holds elements `start..start + chunk.len()`, not yet
/// initialised (no pass over the memory to zero it first).
///
/// # Safety
/// `fill` must write every element of every chunk it is given.
pub(crate) unsafe fn fill(
    n: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let threads = num_threads();
    if n < PAR_MIN_ELEMS || threads == 1 {
        fill(0, &mut out.spare_capacity_mut()[..n]);
    } else {
        let tasks = threads.min(n / (PAR_MIN_ELEMS / 2)).max(1);
        let base = SendPtr(out.as_mut_ptr());
        run_split(tasks, |t| {
            let (lo, hi) = (n * t / tasks, n * (t + 1) / tasks);
            // SAFETY: tasks cover disjoint ranges of `out`'s capacity, which outlives
            // `run_split`.
            let chunk = unsafe {
                std::slice::from_raw_parts_mut(base.get().add(lo) as *mut MaybeUninit<f32>, hi - lo)
            };
            fill(lo, chunk);
        });
    }
    // SAFETY: the chunks cover 0..n, and the caller's `fill` wrote each of them whole.
    unsafe { out.set_len(n) };
    out
}

/// An output pointer handed to parallel tasks, each of which writes its own disjoint
/// part of a buffer that outlives them.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: tasks write disjoint parts of a buffer that outlives the parallel section.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole Send wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
