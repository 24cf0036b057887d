//! [`Mpi`]: the [`Communicator`] on MPI's world communicator.

use std::cell::RefCell;
use std::marker::PhantomData;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::ffi;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{AsRaw, Communicator as _, CommunicatorCollectives, Equivalence, Root};
use mpi::Threading;
use tessera_optim::{check_root, Communicator, Error, PendingSum, Result};

/// The ranks of MPI's world (every process that `mpirun` started), as a
/// [`Communicator`]. MPI is initialised by [`Mpi::init`] and finalised when the value
/// is dropped; only the thread that initialised it may use it (the kernels' own
/// threads never call MPI).
///
/// MPI's errors are fatal, as MPI's default error handler makes them: a rank that
/// dies ends the whole job (`mpirun` reports which rank) instead of leaving the others
/// waiting in a collective.
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_size: usize,
    scratch: RefCell<Vec<f32>>,
    scratch_f64: RefCell<Vec<f64>>,
    // Last: dropping it finalises MPI, after the communicators above are freed.
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_size", &self.local_size)
            .finish()
    }
}

/// The largest element count of one MPI call (MPI counts are C `int`s).
const MAX_COUNT: usize = i32::MAX as usize;

impl Mpi {
    /// Initialises MPI (funnelled threading: only this thread calls MPI) on the world
    /// communicator, with buckets of [`tessera_optim::DEFAULT_BUCKET_BYTES`] (another
    /// size: [`tessera_optim::WithBuckets`]). A second call in the same
    /// process is an error: MPI is initialised once per process.
    pub fn init() -> Result<Mpi> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| Error::Communication {
                op: "MPI_Init_thread",
                reason: "MPI is already initialised in this process (it can be only once)"
                    .to_string(),
            })?;
        if threading < Threading::Funneled {
            return Err(Error::Communication {
                op: "MPI_Init_thread",
                reason: format!(
                    "expected the MPI library to support funnelled threads, got {threading:?}"
                ),
            });
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        // The ranks that share this host's memory, for the default thread count.
        let local_size = world.split_shared(world.rank()).size() as usize;
        Ok(Mpi {
            world,
            rank,
            size,
            local_size,
            scratch: RefCell::new(Vec::new()),
            scratch_f64: RefCell::new(Vec::new()),
            _universe: universe,
        })
    }

    /// The ranks on this host (all of them on one machine): a rank's fair share of
    /// the host's cores is `cores / local_size`.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// The name of this host, as MPI knows it.
    pub fn host(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "?".to_string())
    }

    /// Ends every rank of the job at once with exit status `code` (MPI_Abort): what a
    /// rank does after an error that the other ranks may not see, so that none of them
    /// waits for it forever.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn check_count(op: &'static str, n: usize) -> Result<()> {
        if n > MAX_COUNT {
            return Err(Error::Communication {
                op,
                reason: format!("expected at most {MAX_COUNT} elements in one call, got {n}"),
            });
        }
        Ok(())
    }

    /// `buf` summed over the ranks, in place; `scratch` keeps the send copy's memory
    /// between calls.
    fn sum_into<T: Equivalence + Copy>(
        &self,
        scratch: &RefCell<Vec<T>>,
        buf: &mut [T],
    ) -> Result<()> {
        Self::check_count("all_reduce", buf.len())?;
        let mut send = scratch.borrow_mut();
        send.clear();
        send.extend_from_slice(buf);
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
}

/// An `MPI_Iallreduce` under way. It owns both buffers (their heap memory stays where
/// it is when the value moves) and keeps them until MPI has completed the request: in
/// [`PendingSum::test`], [`PendingSum::wait`], or on drop.
struct Iallreduce<'a> {
    send: Vec<f32>,
    recv: Vec<f32>,
    request: ffi::MPI_Request,
    done: bool,
    _mpi: PhantomData<&'a Mpi>,
}

impl PendingSum for Iallreduce<'_> {
    fn test(&mut self) -> Result<bool> {
        if !self.done {
            let mut flag = 0;
            // SAFETY: the request is active and its buffers are alive (owned by self).
            unsafe { ffi::MPI_Test(&mut self.request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            self.done = flag != 0;
        }
        Ok(self.done)
    }

    fn wait(mut self: Box<Self>) -> Result<Vec<f32>> {
        self.complete();
        self.send = Vec::new();
        Ok(std::mem::take(&mut self.recv))
    }
}

impl Iallreduce<'_> {
    fn complete(&mut self) {
        if !self.done {
            // SAFETY: as in `test`.
            unsafe { ffi::MPI_Wait(&mut self.request, ffi::RSMPI_STATUS_IGNORE) };
            self.done = true;
        }
    }
}

impl Drop for Iallreduce<'_> {
    fn drop(&mut self) {
        // MPI may still read `send` and write `recv`: they go only once it is done.
        self.complete();
    }
}

impl Communicator for Mpi {
    fn start_all_reduce_sum(&self, buf: Vec<f32>) -> Result<Box<dyn PendingSum + '_>> {
        Self::check_count("all_reduce", buf.len())?;
        let mut pending = Iallreduce {
            recv: vec![0.0; buf.len()],
            send: buf,
            // SAFETY: reading an initialised constant of the MPI library.
            request: unsafe { ffi::RSMPI_REQUEST_NULL },
            done: false,
            _mpi: PhantomData,
        };
        // SAFETY: the counts fit an int (checked), both buffers hold that many floats
        // and stay alive and in place until the request completes (see Iallreduce);
        // MPI's errors are fatal, so the return code is always success.
        unsafe {
            ffi::MPI_Iallreduce(
                pending.send.as_ptr().cast(),
                pending.recv.as_mut_ptr().cast(),
                pending.send.len() as i32,
                f32::equivalent_datatype().as_raw(),
                SystemOperation::sum().as_raw(),
                self.world.as_raw(),
                &mut pending.request,
            );
        }
        Ok(Box::new(pending))
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.sum_into(&self.scratch, buf)
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum_into(&self.scratch_f64, buf)
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.size)?;
        Self::check_count("broadcast", buf.len())?;
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        check_root(root, self.size)?;
        Self::check_count("broadcast", buf.len())?;
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}
