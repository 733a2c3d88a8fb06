//! Strapi: a token in `Authorization: Bearer <token>` (or another header
//! the source names), its event in the body's `event`.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::shared::{delivery_id, header, need_str, unauthorized};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::clock::format_at;
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SPEC: Spec = Spec {
    name: "strapi",
    body: BodyShape::Native,
    secret: SecretForm::Token,
    options: &["header"],
    tolerance: super::never,
    signs_delivery: false,
    delivery_header: super::no_header,
    build,
    content_type: "application/json",
    sample,
    sign: send_headers,
};

pub struct Options<'a> {
    /// The header carrying the token, lower-case.
    pub header: &'a String,
    pub secret: &'a Secret,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    let header = b.header_name("header", b.raw.header.as_deref().unwrap_or("authorization"));
    b.secret.take().map(|s| SourceKind::Strapi { header, secret: Secret::new(s) })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, _now: SystemTime) -> Result<Verified, HookError> {
        let name = self.header;
        let got = header(req, name, name)?;
        // Strapi's docs put `Authorization: Bearer <token>`; a bare token works too.
        let token = match got.get(..7) {
            Some(b) if b.eq_ignore_ascii_case("bearer ") => &got[7..],
            _ => got,
        };
        if !self.secret.matches(token.trim().as_bytes()) {
            return Err(unauthorized(format!("wrong {name} token")));
        }
        Ok(Verified { delivery_id: delivery_id(delivery_header, req), ..Verified::default() })
    }

    fn event(
        &self,
        body: &Value,
        _topic: Option<&str>,
        _fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        Ok((Some(need_str(body, "event", "Strapi")?.to_owned()), None))
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &["model", "uid", "entry.id", "entry.documentId"]
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        lookup(body, "createdAt").and_then(time_ms)
    }
}

fn sample(out: &Outgoing<'_>) -> Value {
    let n = u32::from_str_radix(&(out.random_id)("")[..8], 16).unwrap_or(1);
    json!({"event": out.event.unwrap_or("entry.publish"), "createdAt": format_at(out.now), "model": "post",
        "entry": {"id": n % 1000, "title": "Hello"}})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    let header = if out.header == "x-hookcast-token" { "Authorization".to_owned() } else { out.header.to_owned() };
    let event = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["event"].as_str().map(str::to_owned));
    let mut v = vec![(header, format!("Bearer {}", out.secret))];
    v.extend(event.map(|e| ("X-Strapi-Event".to_owned(), e)));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use crate::config::SourceKind;
    use crate::secret::Secret;
    use crate::verify::tests::*;

    #[test]
    fn strapi_bearer_or_bare_token() {
        let src =
            source(SourceKind::Strapi { header: "authorization".into(), secret: Secret::new("strapi-token-0123456789") }, None);
        let body = fixture("strapi/entry-publish.json");
        for ok in ["Bearer strapi-token-0123456789", "bearer strapi-token-0123456789", "strapi-token-0123456789"] {
            run(&src, &[("Authorization", ok)], &body, now()).unwrap();
        }
        for bad in ["Bearer strapi-token-012345678", "Basic strapi-token-0123456789", "", "Bearer "] {
            assert!(refused(run(&src, &[("Authorization", bad)], &body, now())).contains("wrong"), "{bad:?}");
        }
        assert!(refused(run(&src, &[], &body, now())).contains("missing authorization"));
    }
}
