//! Progress goes through the workspace's one [`Reporter`] (crate `clearml-progress`): what is
//! being run, and every output line of the installers, which the caller forwards to the
//! task's console log.

pub use clearml_progress::{NullReporter, Reporter, Step};
