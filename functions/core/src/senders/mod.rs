//! Sender kinds, one file each: a kind's options and how they are read from
//! its settings, how its deliveries are verified (with its own header
//! names), what its events are called and carry by default, how a delivery
//! is known again (its dedupe identity), and how it signs (for `hookcast
//! send` and the tests). [`shared`] holds what they all use; it imports
//! none of them.
//!
//! # The design: one list, a table of specs, enum dispatch
//!
//! The kinds are listed once, in [`senders!`]'s invocation below; that one
//! line per kind declares the [`SourceKind`] variant (its fields are public
//! API: the hosts and tests build and match them), and from the list come
//! [`KINDS`], [`KINDS_NEEDING_FIELDS`], [`SPECS`] and the dispatch.
//!
//! Each kind file then has two parts:
//! - `SPEC`, a [`Spec`]: what is known of the kind before any source exists
//!   (its name, body shape, which settings apply, its options' parsing, how
//!   `hookcast send` makes and signs a delivery). Configuration and the CLI
//!   look a kind up by name, so this is a table of plain data and `fn`s,
//!   not a trait: a trait's associated consts and static fns cannot be
//!   listed and looked up by a string without a table like this anyway.
//! - `Options<'a>`, its options borrowed from the variant, implementing
//!   [`Sender`]: what a configured source does with a delivery. The enum
//!   stays the stored form (cloned, matched, built by tests and hosts);
//!   [`SourceKind`]'s methods only dispatch to the kind's `Options`. A
//!   trait object per kind (`Box<dyn Sender>`) would have meant changing
//!   the public enum every host builds; an enum with one `match` generated
//!   from the list keeps it and still puts each kind's code in its file.
//!
//! Adding a sender: a new file here (`SPEC`, `Options`, `impl Sender`) and
//! its line in the list (see DESIGN.md, "Adding a sender").

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::channel::Channel;
use crate::error::HookError;
use crate::raw::RawSource;
use crate::secret::Secret;
use crate::webhook::{Body, Normalised};
use crate::webhook::{HookRequest, Verified};

pub mod shared;

pub use shared::{Algorithm, Encoding};

/// What a kind's bodies are.
#[derive(Clone, Copy)]
pub enum BodyShape {
    /// The sender's own body, published to channels of its own (Netlify's
    /// deploys and forms): no `channel`, `channels`, `event` or `fields`;
    /// `check` refuses them in the kind's words.
    Own { check: fn(at: &str, raw: &RawSource, problems: &mut Vec<String>) },
    /// `{"channel","event","data"}` to allowed `channels` (or, with a
    /// `channel` set, a native body): anyone's shape, so `fields` must name
    /// what reaches pages.
    Envelope,
    /// The sender's own JSON, to `channel` (default: the source's name) as
    /// `event` (default: the sender's type).
    Native,
}

/// How a kind's secret is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretForm {
    /// An HMAC key, as given.
    Key,
    /// Standard Webhooks' `whsec_` + base64; its length is judged decoded.
    Whsec,
    /// A token the sender sends as is.
    Token,
}

/// What `hookcast send` was asked for; a kind reads what applies to it.
pub struct Outgoing<'a> {
    pub secret: &'a str,
    /// Its event type (`--event`), where the sender names one.
    pub event: Option<&'a str>,
    pub url: &'a str,
    /// Contentful's signed path (`--path`).
    pub path: Option<&'a str>,
    /// The token header (`--header`).
    pub header: &'a str,
    /// The generic `hmac` kind's flags, as its settings.
    pub signature_header: Option<&'a str>,
    pub prefix: Option<&'a str>,
    pub encoding: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    pub timestamp_header: Option<&'a str>,
    pub now: SystemTime,
    /// A new random id after `prefix` (hex).
    pub random_id: &'a dyn Fn(&str) -> String,
}

/// Why `hookcast send` could not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The secret is not in the kind's form (a `whsec_` one).
    #[error("{0}")]
    Secret(String),
}

/// Headers a kind sends, as name-value pairs.
pub type Headers = Vec<(String, String)>;

/// A kind as configuration and `hookcast send` know it, before any source exists.
pub struct Spec {
    /// `kind = "<name>"`.
    pub name: &'static str,
    pub body: BodyShape,
    pub secret: SecretForm,
    /// The settings only this kind reads (`header`, `forms`, `path`,
    /// `prefix`, …); set on another kind they are refused.
    pub options: &'static [&'static str],
    /// Whether `tolerance_secs` applies: its sender signs a time.
    pub tolerance: fn(&RawSource) -> bool,
    /// The delivery's identity is signed (in a header or the body), so
    /// `delivery_header` does not apply.
    pub signs_delivery: bool,
    /// The header naming a delivery when the source sets none.
    pub delivery_header: fn(&RawSource) -> Option<&'static str>,
    /// The variant, from its settings; what is wrong goes to the problems.
    pub build: fn(&mut Build<'_>) -> Option<SourceKind>,
    /// `hookcast send`: the content type of a native body.
    pub content_type: &'static str,
    /// `hookcast send`: a small body of the sender's own shape.
    pub sample: fn(&Outgoing<'_>) -> Value,
    /// `hookcast send`: the headers it sends with `body`, signed as it signs.
    pub sign: fn(&Outgoing<'_>, &[u8]) -> Result<Headers, SignError>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A `Spec` field for kinds that take no `tolerance_secs`, or name no delivery header.
pub fn never(_: &RawSource) -> bool {
    false
}
pub fn always(_: &RawSource) -> bool {
    true
}
pub fn no_header(_: &RawSource) -> Option<&'static str> {
    None
}
/// A `Spec` sample for kinds whose body is not the sender's own JSON.
pub fn no_sample(_: &Outgoing<'_>) -> Value {
    Value::Object(Default::default())
}

/// One source's settings being read into its kind.
pub struct Build<'a> {
    /// `sources.<name>`, as problems name it.
    pub at: &'a str,
    /// The source's name.
    pub name: &'a str,
    pub raw: &'a RawSource,
    /// The secret found for it (checked for length unless [`SecretForm::Whsec`]).
    pub secret: Option<String>,
    pub problems: &'a mut Vec<String>,
}

impl Build<'_> {
    pub fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
    /// `tolerance_secs`, else `default` seconds.
    pub fn tolerance(&self, default: u64) -> Duration {
        Duration::from_secs(self.raw.tolerance_secs.unwrap_or(default))
    }
    /// A header name from setting `field`, lower-cased; a problem if it is none.
    pub fn header_name(&mut self, field: &str, h: &str) -> String {
        header_name(self.at, field, h, self.problems)
    }
}

/// A header name from setting `field`, lower-cased; a problem if it is none.
pub fn header_name(at: &str, field: &str, h: &str, problems: &mut Vec<String>) -> String {
    let h = h.to_ascii_lowercase();
    if !valid_header(&h) {
        problems.push(format!("{at}.{field} {h:?} is not a valid header name"));
    }
    h
}

pub fn valid_header(h: &str) -> bool {
    !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A setting that another kind reads, set here.
pub fn misplaced(at: &str, kind: &str, field: &str, set: bool, problems: &mut Vec<String>) {
    if set {
        problems.push(format!("{at}.{field} does not apply to kind {kind:?}"));
    }
}

/// What a configured source's kind does with a delivery; each kind's
/// `Options` (its options, borrowed from [`SourceKind`]) implements it.
pub trait Sender {
    /// Checks the signature on the raw body and reads what the headers say:
    /// the delivery id (from `delivery_header` where the kind's is
    /// unsigned), whether the signature covers it, the hash of what the
    /// signature covers, and the event type where it travels in a header.
    fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError>;
    /// The clock skew allowed to the time its sender signs; `None`: it signs none.
    fn signed_tolerance(&self) -> Option<Duration> {
        None
    }
    /// A verified delivery that is no event (GitHub's ping), and why.
    fn ignores(&self, _verified: &Verified) -> Option<&'static str> {
        None
    }
    /// For [`BodyShape::Own`] kinds: the body as the kind publishes it.
    fn own(&self, _body: &Body) -> Option<Result<Normalised, HookError>> {
        None
    }
    /// The sender's own name for the event and, where the body carries it,
    /// its (signed) delivery id; `topic` is the type from a header.
    fn event(
        &self,
        _body: &Value,
        _topic: Option<&str>,
        _fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        Ok((None, None))
    }
    /// What reaches pages when the source lists no `fields`.
    fn default_fields(&self) -> &'static [&'static str] {
        &["id", "type"]
    }
    /// The sender's own time for the event (ms since the epoch).
    fn time(&self, _body: &Value, _topic: Option<&str>) -> Option<u64> {
        None
    }
}

/// Declares the kinds: `Variant = module { its fields }`, one line each.
/// Makes the modules, [`SourceKind`], [`SPECS`], [`KINDS`] and the dispatch.
macro_rules! senders {
    ($($(#[$doc:meta])* $Variant:ident = $m:ident { $($field:ident: $ty:ty),* $(,)? }),* $(,)?) => {
        $(pub mod $m;)*

        /// A source's kind and its options. Only dispatches: each kind's
        /// code is in its file.
        #[derive(Debug, Clone)]
        pub enum SourceKind {
            $($(#[$doc])* $Variant { $($field: $ty),* },)*
        }

        /// Every kind, in the order configuration lists them.
        pub const SPECS: &[&Spec] = &[$(&$m::SPEC),*];

        /// Every kind's name, as written in the configuration.
        pub const KINDS: &[&str] = &[$($m::SPEC.name),*];

        impl SourceKind {
            /// The kind's spec.
            pub fn spec(&self) -> &'static Spec {
                match self {
                    $(SourceKind::$Variant { .. } => &$m::SPEC,)*
                }
            }
            /// Runs `f` on the kind's behaviour over its options.
            fn with<R>(&self, f: impl FnOnce(&dyn Sender) -> R) -> R {
                match self {
                    $(SourceKind::$Variant { $($field),* } => f(&$m::Options { $($field),* }),)*
                }
            }
        }
    };
}

senders! {
    /// `forms`: per form name, its allowed fields; `form_channels`: per form
    /// name, a channel that replaces `forms/<slug>`.
    Netlify = netlify { secret: Secret, forms: BTreeMap<String, Vec<String>>, form_channels: BTreeMap<String, Channel> },
    Github = github { secret: Secret },
    Vercel = vercel { secret: Secret },
    Stripe = stripe { secret: Secret, tolerance: Duration },
    Shopify = shopify { secret: Secret },
    Sanity = sanity { secret: Secret, tolerance: Duration },
    Contentful = contentful { secret: Secret, tolerance: Duration, path: String },
    /// Svix and every sender through it (Clerk, Resend): Standard Webhooks
    /// under `svix-*` or `webhook-*` header names.
    Svix = svix { secret: Secret, tolerance: Duration },
    Strapi = strapi { header: String, secret: Secret },
    Standard = standard { secret: Secret, tolerance: Duration },
    Hmac = hmac { secret: Secret, scheme: HmacScheme },
    Token = token { header: String, secret: Secret },
}

pub use self::hmac::HmacScheme;

/// The kind named `name` in configuration.
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().copied().find(|s| s.name == name)
}

const NEEDING_FIELDS: usize = {
    let (mut n, mut i) = (0, 0);
    while i < SPECS.len() {
        if matches!(SPECS[i].body, BodyShape::Envelope) {
            n += 1;
        }
        i += 1;
    }
    n
};

const NEEDING_FIELDS_NAMES: [&str; NEEDING_FIELDS] = {
    let mut out = [""; NEEDING_FIELDS];
    let (mut n, mut i) = (0, 0);
    while i < SPECS.len() {
        if matches!(SPECS[i].body, BodyShape::Envelope) {
            out[n] = SPECS[i].name;
            n += 1;
        }
        i += 1;
    }
    out
};

/// Kinds whose bodies are the sender's to shape ([`BodyShape::Envelope`]),
/// so `fields` must name what may reach pages.
pub const KINDS_NEEDING_FIELDS: &[&str] = &NEEDING_FIELDS_NAMES;

impl SourceKind {
    /// The kind's name, as written in the configuration.
    pub fn name(&self) -> &'static str {
        self.spec().name
    }
    /// See [`Sender::verify`].
    pub fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        self.with(|s| s.verify(req, delivery_header, now))
    }
    /// See [`Sender::signed_tolerance`].
    pub fn signed_tolerance(&self) -> Option<Duration> {
        self.with(|s| s.signed_tolerance())
    }
    /// See [`Sender::ignores`].
    pub fn ignores(&self, verified: &Verified) -> Option<&'static str> {
        self.with(|s| s.ignores(verified))
    }
    /// See [`Sender::own`].
    pub fn own(&self, body: &Body) -> Option<Result<Normalised, HookError>> {
        self.with(|s| s.own(body))
    }
    /// See [`Sender::event`].
    pub fn event(
        &self,
        body: &Value,
        topic: Option<&str>,
        fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        self.with(|s| s.event(body, topic, fields))
    }
    /// See [`Sender::default_fields`].
    pub fn default_fields(&self) -> &'static [&'static str] {
        self.with(|s| s.default_fields())
    }
    /// See [`Sender::time`].
    pub fn time(&self, body: &Value, topic: Option<&str>) -> Option<u64> {
        self.with(|s| s.time(body, topic))
    }
}
