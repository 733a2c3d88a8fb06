//! What stops a `hookcast` command, by kind. Each carries the one line the
//! command prints (`error: …`); the kind says where the problem is, so a
//! caller (and a test) can tell a bad flag from a config file it cannot use,
//! a data directory another server holds, a store that will not open, a
//! certificate, the network, the server failing while it runs, or the
//! emulated AWS stack (`hookcast emulate`).

use std::path::PathBuf;

use hookcast_core::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value that cannot be used; the message names the flag.
    #[error("{0}")]
    Usage(String),
    /// A config file (or the settings made from it) that cannot be used.
    #[error("{0}")]
    Config(String),
    /// The data directory: cannot be made or read, or another server holds it.
    #[error("{0}")]
    DataDir(String),
    /// The event store in the data directory would not open.
    #[error("cannot open {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    /// A certificate or key for TLS.
    #[error("{0}")]
    Tls(String),
    /// A server to talk to (`send`, `listen`) could not be reached or answered wrongly.
    #[error("{0}")]
    Network(String),
    /// Listening, or serving once started.
    #[error("{0}")]
    Serve(String),
    /// `hookcast emulate`: the stack did not start, or stopped.
    #[error(transparent)]
    Emulate(#[from] hookcast_emulate::stack::StackError),
    /// The command already said what went wrong (a refused `send`).
    #[error("")]
    Reported,
}
