//! A counting global allocator: while an input runs, it records the largest single
//! allocation its thread asks for, flags anything above the input's bound, and refuses
//! (returns null for) anything above a hard ceiling, so that a parser asking for
//! terabytes ends the run with a report instead of exhausting the machine.
//!
//! A binary or test installs it with
//! `#[global_allocator] static A: tessera_fuzz::CountingAlloc = tessera_fuzz::CountingAlloc;`.
//! Without it the limits are simply not measured (every figure reads 0).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// [`std::alloc::System`] with per-thread accounting of the largest allocation while an
/// input runs (see [`Watch`]).
pub struct CountingAlloc;

thread_local! {
    /// Whether this thread is running an input.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Sizes above this are refused.
    static CEILING: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The largest size asked for since the input started.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// Whether a request was refused since the input started.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// Set once the allocator has seen a request while armed: proof that it is installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Records a request of `size` bytes; false when it must be refused.
fn admit(size: usize) -> bool {
    ARMED
        .try_with(|armed| {
            if !armed.get() {
                return true;
            }
            INSTALLED.store(true, Ordering::Relaxed);
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            let ceiling = CEILING.try_with(Cell::get).unwrap_or(usize::MAX);
            if size > ceiling {
                let _ = REFUSED.try_with(|r| r.set(true));
                return false;
            }
            true
        })
        .unwrap_or(true)
}

// SAFETY: every call is forwarded to `System` with the same arguments; the accounting
// touches only `const`-initialised thread-locals without destructors, which never
// allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !admit(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Whether [`CountingAlloc`] is the global allocator of this process (known once one
/// input has run under a [`Watch`]).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// The accounting of one input on the current thread: started by [`Watch::start`],
/// read by [`Watch::finish`].
pub struct Watch(());

impl Watch {
    /// Starts counting this thread's allocations; requests above `ceiling` bytes are
    /// refused until [`Watch::finish`].
    pub fn start(ceiling: usize) -> Watch {
        LARGEST.with(|l| l.set(0));
        REFUSED.with(|r| r.set(false));
        CEILING.with(|c| c.set(ceiling));
        ARMED.with(|a| a.set(true));
        Watch(())
    }

    /// Stops counting; returns the largest single request and whether one was refused.
    pub fn finish(self) -> (usize, bool) {
        ARMED.with(|a| a.set(false));
        (LARGEST.with(Cell::get), REFUSED.with(Cell::get))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        ARMED.with(|a| a.set(false));
    }
}
