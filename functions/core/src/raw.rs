//! A source's settings as written (`[sources.<name>]`), before
//! [`crate::config::Config::build`] reads them. Plain data: the sender kinds
//! ([`crate::senders`]) read their options from it.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForm {
    /// Submitted fields forwarded to pages; everything else is dropped.
    #[serde(default)]
    pub fields: Vec<String>,
    /// The channel this form publishes to, instead of `forms/<slug>`.
    pub channel: Option<String>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub kind: String,
    pub secret: Option<String>,
    /// Name of an environment variable holding the secret.
    pub secret_env: Option<String>,
    /// `token` and `strapi`: the header carrying the shared secret; `hmac`:
    /// the header carrying the signature.
    pub header: Option<String>,
    /// `hmac`: text before the signature in its header (`sha256=`).
    pub prefix: Option<String>,
    /// `hmac`: `hex` (default) or `base64`.
    pub encoding: Option<String>,
    /// `hmac`: `sha256` (default) or `sha1`.
    pub algorithm: Option<String>,
    /// `hmac`: a header with the signed unix time (seconds); the MAC is then
    /// over `<timestamp>.<body>` and `tolerance_secs` applies.
    pub timestamp_header: Option<String>,
    /// `contentful`: the request path Contentful signs (default `/hooks/<source>`).
    pub path: Option<String>,
    /// The channel events go to: a name, or a template with `{dotted.path}`
    /// holes filled from the sender's body. Sender kinds default to the
    /// source's name; `hmac`, `standard` and `token` read a native body
    /// (not `{"channel","event","data"}`) when it is set.
    pub channel: Option<String>,
    /// The event name, or a template; sender kinds default to the sender's
    /// own type.
    pub event: Option<String>,
    /// Channels this source may publish to: exact names or `prefix*`.
    pub channels: Option<Vec<String>>,
    /// The events this source publishes, by the name hookcast gives them
    /// (`release.published`, `push`, `deploy.succeeded`): names or
    /// `prefix*` (`release.*`). Any other delivery is verified, answered
    /// 200 `{"ignored":true}` (so the sender does not retry) and stored
    /// nowhere. Unset: every event.
    pub events: Option<Vec<String>>,
    /// A channel per event (`"release.*" = "releases"`, `"push" =
    /// "commits/{repository.name}"`): event patterns, the most specific
    /// first (an exact name, then the longest prefix), each to a channel or a
    /// template; an event none matches goes to `channel`. Sender bodies only.
    #[serde(default)]
    pub channel_by_event: BTreeMap<String, String>,
    /// Kinds whose sender signs a time: allowed clock skew (default 300 s;
    /// `contentful` 30 s, as Contentful's toolkit).
    pub tolerance_secs: Option<u64>,
    /// `hmac` and `token` sources: the header naming each delivery (its
    /// dedupe key; a retry with the same value is not pushed twice).
    /// `hmac` defaults to GitHub's `x-github-delivery`. The header is not
    /// signed, so an `hmac` delivery is also known by the hash of what its
    /// signature covers (a replay under a new id is a duplicate); a `token`
    /// delivery without one is always a distinct event.
    pub delivery_header: Option<String>,
    /// `netlify` sources: per-form field allow-lists.
    #[serde(default)]
    pub forms: BTreeMap<String, RawForm>,
    /// What reaches pages. With a native body (every sender kind, or a
    /// `channel` set): dotted paths into the body (`release.tag_name`, or
    /// `tag=release.tag_name` to rename), unset: the kind's ids and names.
    /// With `{"channel","event","data"}`: paths into `data`. Required for
    /// `token`, `hmac` and `standard` sources, whose bodies are anyone's:
    /// no field leaves unless it is named.
    pub fields: Option<Vec<String>>,
}

impl std::fmt::Debug for RawSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSource").field("kind", &self.kind).finish_non_exhaustive()
    }
}
