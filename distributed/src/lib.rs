//! # tessera-distributed
//!
//! Data-parallel training over MPI, the way PyTorch's `DistributedDataParallel` does
//! it: one process per rank, each with a copy of the model and its part of every
//! batch; rank 0's initial parameters broadcast to all; gradients averaged with
//! all-reduce in buckets (25 MiB by default, as DDP's); every rank then takes the same
//! optimizer step, so the copies stay identical.
//!
//! The model crates never see MPI: they take a [`Communicator`] (defined in
//! `tessera-optim`, with the single-process [`Local`]), and this crate implements it on
//! MPI as `Mpi` with the feature `mpi` (off by default, so that the workspace builds
//! where no MPI is installed). The `tessera` command's feature `mpi` wires it into its
//! one training loop: `mpirun -n 2 tessera vit train ...`.
//!
//! ```no_run
//! # #[cfg(feature = "mpi")]
//! # fn main() -> Result<(), tessera_optim::Error> {
//! use tessera_distributed::{Communicator, Mpi};
//! let mpi = Mpi::init()?;
//! let mut grads = vec![mpi.rank() as f32; 4];
//! mpi.all_reduce_sum(&mut grads)?; // 0 + 1 + ... on every rank
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "mpi"))]
//! # fn main() {}
//! ```
#![warn(missing_docs)]

#[cfg(feature = "mpi")]
mod mpi_comm;

#[cfg(feature = "mpi")]
pub use mpi_comm::Mpi;
pub use tessera_optim::{
    all_reduce_gradients, broadcast_parameters, check_same, shard, Communicator, Error,
    GradientReducer, Local, PendingSum, Result, WithBuckets, DEFAULT_BUCKET_BYTES,
};

/// The variables by which MPI launchers tell a process its rank: Open MPI's `mpirun`,
/// then PMIx and PMI (Slurm's `srun`, MPICH's Hydra).
const LAUNCHER_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"];

/// Whether an MPI launcher (`mpirun`, `srun`) started this process, so that a program
/// built with MPI only initialises it when it runs as one of several ranks.
pub fn launched() -> bool {
    LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
}
