//! A shared token in a header (`x-hookcast-token` unless the source names
//! another): Zapier and anything that can set a header. Nothing is signed.

use std::time::SystemTime;

use super::shared::delivery_id;
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SPEC: Spec = Spec {
    name: "token",
    body: BodyShape::Envelope,
    secret: SecretForm::Token,
    options: &["header"],
    tolerance: super::never,
    signs_delivery: false,
    delivery_header: super::no_header,
    build,
    content_type: "application/json",
    sample: super::no_sample,
    sign: send_headers,
};

pub struct Options<'a> {
    /// The header carrying the token, lower-case.
    pub header: &'a String,
    pub secret: &'a Secret,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    let header = b.header_name("header", b.raw.header.as_deref().unwrap_or("x-hookcast-token"));
    b.secret.take().map(|s| SourceKind::Token { header, secret: Secret::new(s) })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, _now: SystemTime) -> Result<Verified, HookError> {
        let header = self.header;
        let got = req.header(header).ok_or_else(|| HookError::Unauthorized(format!("missing {header} header")))?;
        if self.secret.matches(got.as_bytes()) {
            // Nothing is signed: whoever holds a request holds the token.
            Ok(Verified { delivery_id: delivery_id(delivery_header, req), ..Verified::default() })
        } else {
            Err(HookError::Unauthorized(format!("wrong {header} token")))
        }
    }
}

fn send_headers(out: &Outgoing<'_>, _body: &[u8]) -> Result<Headers, SignError> {
    Ok(vec![(out.header.to_owned(), out.secret.to_owned())])
}

#[cfg(test)]
mod tests {
    use crate::error::HookError;
    use crate::verify::tests::*;
    use crate::verify::{verify, HookRequest};

    #[test]
    fn token_and_headers_through_verify() {
        use crate::config::{Source, SourceKind};
        use crate::secret::Secret;
        let src = Source {
            name: "zap".into(),
            kind: SourceKind::Token { header: "x-hookcast-token".into(), secret: Secret::new("t0ken") },
            channels: vec!["*".parse().unwrap()],
            delivery_header: None,
            fields: None,
            route: None,
            events: None,
        };
        let ok = [("X-Hookcast-Token".to_string(), "t0ken".to_string())];
        let bad = [("x-hookcast-token".to_string(), "t0ke".to_string())];
        verify(&src, &HookRequest { headers: &ok, body: b"{}" }, now()).unwrap();
        assert!(matches!(verify(&src, &HookRequest { headers: &bad, body: b"{}" }, now()), Err(HookError::Unauthorized(_))));
        assert!(
            matches!(verify(&src, &HookRequest { headers: &Vec::new(), body: b"{}" }, now()), Err(HookError::Unauthorized(m)) if m.contains("missing"))
        );
    }
}
