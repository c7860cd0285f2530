//! How a command ended. Commands (`hermes chat`, `hermes gateway`, the
//! service installer) return an [`Outcome`]; only the command line turns it
//! into an exit code, so no command depends on the command line.

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Done,
    /// It ran and failed (an upstream error, a failed write, the server died).
    Failed,
    /// Bad usage or configuration: nothing ran.
    BadConfig,
    /// Interrupted by the user (Ctrl-C).
    Interrupted,
}
