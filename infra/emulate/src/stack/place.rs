//! Where the functions start: what every part of starting them reads.

use std::sync::Arc;

use super::args::EmulateArgs;
use super::provision::Queues;
use crate::template::{Attrs, Template};

/// Where the functions start: the template, resolved, and what they call.
pub(super) struct Place<'a> {
    pub(super) args: &'a EmulateArgs,
    pub(super) t: &'a Template,
    pub(super) attrs: &'a Attrs,
    /// The DynamoDB front's URL (the functions' AWS endpoint).
    pub(super) front_url: &'a str,
    pub(super) meter: &'a Arc<crate::bill::Meter>,
    /// execute-api hosts → where those APIs are here.
    pub(super) rewrites: &'a [(String, String)],
    pub(super) queues: &'a Queues,
    /// Where each function's stand-in for /opt goes ([`super::layers`]).
    pub(super) opt_dir: &'a std::path::Path,
}
