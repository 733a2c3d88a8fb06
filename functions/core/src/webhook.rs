//! A webhook and what it comes to, whatever its sender: the request as it
//! arrived, what a valid signature tells, the parsed body, the event it
//! becomes. The sender kinds ([`crate::senders`]) take and make these;
//! [`crate::verify`] and [`crate::normalize`] run them. It imports neither.

use serde_json::Value;

use crate::channel::{Channel, EventName};

/// A request's headers as verification reads them: the first value of a
/// name, compared case-insensitively; a value that is not text is absent.
/// The HTTP edge implements it over its own header map, so nothing is copied.
pub trait Headers: Sync {
    fn get(&self, name: &str) -> Option<&str>;
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Name-value pairs (tests, fuzzing, tools).
impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        find(self, name)
    }
}

impl<const N: usize> Headers for [(String, String); N] {
    fn get(&self, name: &str) -> Option<&str> {
        find(self, name)
    }
}

/// A webhook as it arrived.
#[derive(Clone, Copy)]
pub struct HookRequest<'a> {
    pub headers: &'a dyn Headers,
    pub body: &'a [u8],
}

impl<'a> HookRequest<'a> {
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name)
    }
}

/// What a valid signature tells us beyond "authentic".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// A sender-assigned delivery id from a header (`webhook-id`,
    /// `X-GitHub-Delivery`, …); ids inside the body are read by [`crate::normalize`].
    pub delivery_id: Option<String>,
    /// Whether the signature covers `delivery_id` (Standard Webhooks and
    /// Svix sign theirs; GitHub, Shopify, Sanity and the `hmac` kind do not,
    /// so a captured request verifies again with another id in the header).
    pub id_signed: bool,
    /// Hex SHA-256 of what the signature covers (the body, or the signed
    /// timestamp and body, or Contentful's canonical request), for kinds
    /// whose signature may cover no delivery identity: a replay is known by
    /// it. `None` where the identity is always signed (Stripe, Vercel,
    /// Standard Webhooks, Svix: refused without one) or nothing is signed
    /// (token, Strapi).
    pub signed_sha256: Option<String>,
    /// The sender's event type, where it sends it in a header
    /// (`X-GitHub-Event`, `X-Shopify-Topic`, `X-Contentful-Topic`, `sanity-operation`).
    pub topic: Option<String>,
}

/// A validated event, not yet in a channel log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub channel: Channel,
    pub event: EventName,
    pub data: Value,
    /// The sender's identities for this delivery, scoped to its source
    /// (`<source>:id:<delivery id>`, `<source>:deploy:<id>:<state>`, …):
    /// a redelivery carries the same. Empty with no `content_key`: every
    /// delivery is a distinct event.
    pub delivery_keys: Vec<String>,
    /// `<source>:sha256:<hex>` of what the signature covers, when no
    /// identity above is signed: a captured request replayed under a new
    /// delivery id (or event-type header) is known by it.
    pub content_key: Option<String>,
    /// The sender's own time for the event (ms since the epoch), read where
    /// its kind's body says it (see [`crate::normalize::sender_time`]).
    pub event_ms: Option<u64>,
}

/// What a verified webhook comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalised {
    Event(NewEvent),
    /// Nothing is published, nothing stored (a Netlify form the source does
    /// not list): the sender is answered 200 so it does not retry.
    Ignored {
        /// Where it would have gone.
        channel: Channel,
        reason: String,
    },
}

impl Normalised {
    /// The event, if there is one.
    pub fn event(self) -> Option<NewEvent> {
        match self {
            Self::Event(e) => Some(e),
            Self::Ignored { .. } => None,
        }
    }
}

/// A webhook body, parsed by its content type.
pub enum Body {
    Json(Value),
    Form(Vec<(String, String)>),
}
