//! Svix and every sender through it (Clerk, Resend): Standard Webhooks
//! ([`super::standard`]) under `svix-*` or `webhook-*` header names, on the
//! sender's own body (`{"type", "data": {…}}`).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::shared::need_str;
use super::standard::{send_as, verify_signed_id, whsec};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SPEC: Spec = Spec {
    name: "svix",
    body: BodyShape::Native,
    secret: SecretForm::Whsec,
    options: &[],
    tolerance: super::always,
    signs_delivery: true,
    delivery_header: super::no_header,
    build,
    content_type: "application/json",
    sample,
    sign: send_headers,
};

pub struct Options<'a> {
    pub secret: &'a Secret,
    pub tolerance: &'a Duration,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    let tolerance = b.tolerance(300);
    whsec(b).map(|secret| SourceKind::Svix { secret, tolerance })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, _delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        verify_signed_id(self.secret, req, now, *self.tolerance)
    }

    fn signed_tolerance(&self) -> Option<Duration> {
        Some(*self.tolerance)
    }

    fn event(
        &self,
        body: &Value,
        _topic: Option<&str>,
        _fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        Ok((Some(need_str(body, "type", "Svix")?.to_owned()), None))
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &["data.id", "data.object", "data.email_id"]
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        lookup(body, "timestamp").and_then(time_ms)
    }
}

fn sample(out: &Outgoing<'_>) -> Value {
    json!({"type": out.event.unwrap_or("user.created"), "object": "event",
        "data": {"id": (out.random_id)("user_"), "object": "user"}})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    send_as("svix", out, body)
}
