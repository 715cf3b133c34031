//! The output folder: where each run keeps its state ([`layout`]: the whole folder's and
//! each shard's state folders, the shard count, every run's journal read together), who
//! holds it ([`lock`]), and taking it for a run (the locks, the sweep of what a killed
//! run left, the folded journals and the run's own journal opened for writing). Every
//! command comes in through one type, [`Folder`].

mod entry;
pub mod layout;
pub mod lock;
mod open;
mod sweep;

pub use entry::{Folder, OpenFolder, RunFolder};
pub use open::{FirstCheckpoint, FolderLocks};
