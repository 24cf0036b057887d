//! The ranks of a data-parallel run: MPI's when the command was built with the feature
//! `mpi` and started by `mpirun`, else this process alone.

use std::rc::Rc;

use anyhow::Result;
use tessera_optim::{Communicator, Local};

#[cfg(feature = "mpi")]
thread_local! {
    /// MPI, once initialised (by the first training run of the process).
    static MPI: std::cell::RefCell<Option<Rc<tessera_distributed::Mpi>>> =
        const { std::cell::RefCell::new(None) };
}

/// The ranks this process trains with: MPI's world when `mpirun` (or another MPI
/// launcher) started it and the command has the feature `mpi`, else [`Local`].
/// `bucket_mb` sets the size of the gradient buckets.
pub fn communicator(bucket_mb: Option<f64>) -> Result<Rc<dyn Communicator>> {
    #[cfg(feature = "mpi")]
    if tessera_distributed::launched() {
        let mpi = MPI.with(|m| -> Result<_> {
            let mut m = m.borrow_mut();
            if m.is_none() {
                *m = Some(Rc::new(tessera_distributed::Mpi::init()?));
            }
            Ok(m.clone().expect("initialised above"))
        })?;
        let Some(mb) = bucket_mb else {
            return Ok(mpi);
        };
        let bytes = (mb * 1024.0 * 1024.0) as usize;
        return Ok(Rc::new(tessera_optim::WithBuckets::new(mpi, bytes)));
    }
    let _ = bucket_mb;
    Ok(Rc::new(Local))
}

/// The ranks on this host (1 without MPI): `--threads` defaults to the cores over it.
pub fn ranks_on_this_host() -> usize {
    #[cfg(feature = "mpi")]
    if let Some(m) = MPI.with(|m| m.borrow().clone()) {
        return m.local_size().max(1);
    }
    1
}

/// This process's rank and the number of ranks, once MPI runs: `(0, 1)` otherwise.
pub fn rank_and_size() -> (usize, usize) {
    #[cfg(feature = "mpi")]
    if let Some(m) = MPI.with(|m| m.borrow().clone()) {
        return (m.rank(), m.size());
    }
    (0, 1)
}

/// Ends the process after `error` on a run of several ranks: every rank that saw an
/// error all ranks see (a configuration that differs between them) has printed it,
/// so MPI ends normally; any other error ends the whole job at once (MPI_Abort), since
/// the other ranks would wait for this one forever. Returns where MPI does not run.
pub fn end_after_error(error: &anyhow::Error, code: i32) {
    #[cfg(feature = "mpi")]
    if let Some(m) = MPI.with(|m| m.borrow_mut().take()) {
        if m.size() > 1 {
            let on_every_rank = error.chain().any(|c| {
                matches!(
                    c.downcast_ref::<tessera_optim::Error>(),
                    Some(tessera_optim::Error::RanksDisagree { .. })
                ) || c.downcast_ref::<OnEveryRank>().is_some()
            });
            if on_every_rank && m.barrier().is_ok() {
                drop(m);
                std::process::exit(code);
            }
            m.abort(code);
        }
    }
    let _ = (error, code);
}

/// Finalises MPI (at the end of `main`) where it runs.
pub fn end() {
    #[cfg(feature = "mpi")]
    MPI.with(|m| drop(m.borrow_mut().take()));
}

/// An error that every rank meets at the same point (a setting that does not fit the
/// number of ranks): each rank reports it and the job ends without MPI_Abort.
#[derive(Debug)]
pub struct OnEveryRank(pub String);

impl std::fmt::Display for OnEveryRank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OnEveryRank {}
