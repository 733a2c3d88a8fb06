//! The generic `hmac` kind: `<prefix><hex|base64 HMAC>` of the body (or of
//! `<timestamp>.<body>`) in a header of the source's choosing; GitHub's
//! form unless told otherwise. The body is anyone's: a
//! `{"channel","event","data"}` envelope, or a native body with `channel` set.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::shared::{check_age, delivery_id, header, hmac_bytes, mac_matches, sha256_hex, unauthorized, unix_secs, Algorithm, Encoding};
use super::{github, valid_header, Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::raw::RawSource;
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SPEC: Spec = Spec {
    name: "hmac",
    body: BodyShape::Envelope,
    secret: SecretForm::Key,
    options: &["header", "prefix", "encoding", "algorithm", "timestamp_header"],
    // Only a signed time has a tolerance.
    tolerance: |raw| raw.timestamp_header.is_some(),
    signs_delivery: false,
    // GitHub's delivery header goes with GitHub's signature header.
    delivery_header: |raw| raw.header.is_none().then_some(github::DELIVERY),
    build,
    content_type: "application/json",
    sample: super::no_sample,
    sign: send_headers,
};

/// How the generic `hmac` kind reads a signature. [`HmacScheme::github`]
/// is the default: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    /// Lower-case header name.
    pub header: String,
    pub prefix: String,
    pub encoding: Encoding,
    pub algorithm: Algorithm,
    /// A signed timestamp: its header and the allowed skew. The MAC is then
    /// over `<timestamp>.<body>`.
    pub timestamp: Option<(String, Duration)>,
}

impl HmacScheme {
    pub fn github() -> Self {
        Self {
            header: github::SIGNATURE.into(),
            prefix: "sha256=".into(),
            encoding: Encoding::Hex,
            algorithm: Algorithm::Sha256,
            timestamp: None,
        }
    }
}

pub struct Options<'a> {
    pub secret: &'a Secret,
    pub scheme: &'a HmacScheme,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    let scheme = scheme(b.at, b.raw, b.problems);
    b.secret.take().map(|s| SourceKind::Hmac { secret: Secret::new(s), scheme })
}

/// The scheme from the source's settings: GitHub's unless told otherwise.
fn scheme(at: &str, rs: &RawSource, problems: &mut Vec<String>) -> HmacScheme {
    let github = HmacScheme::github();
    let header = rs.header.as_deref().map_or(github.header.clone(), str::to_ascii_lowercase);
    // GitHub's prefix goes with GitHub's header; another header has none unless given.
    let prefix = rs.prefix.clone().unwrap_or_else(|| if rs.header.is_none() { github.prefix.clone() } else { String::new() });
    let encoding = match rs.encoding.as_deref() {
        None | Some("hex") => Encoding::Hex,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            problems.push(format!("{at}.encoding {other:?} is not hex or base64"));
            Encoding::Hex
        }
    };
    let algorithm = match rs.algorithm.as_deref() {
        None | Some("sha256") => Algorithm::Sha256,
        Some("sha1") => Algorithm::Sha1,
        Some(other) => {
            problems.push(format!("{at}.algorithm {other:?} is not sha256 or sha1"));
            Algorithm::Sha256
        }
    };
    if !valid_header(&header) {
        problems.push(format!("{at}.header {header:?} is not a valid header name"));
    }
    let timestamp = rs.timestamp_header.as_deref().map(|h| {
        let h = h.to_ascii_lowercase();
        if !valid_header(&h) {
            problems.push(format!("{at}.timestamp_header {h:?} is not a valid header name"));
        }
        (h, Duration::from_secs(rs.tolerance_secs.unwrap_or(300)))
    });
    HmacScheme { header, prefix, encoding, algorithm, timestamp }
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        let signed = check(self.secret.expose(), self.scheme, req, now)?;
        Ok(Verified { delivery_id: delivery_id(delivery_header, req), id_signed: false, signed_sha256: Some(signed), topic: None })
    }

    fn signed_tolerance(&self) -> Option<Duration> {
        self.scheme.timestamp.as_ref().map(|(_, t)| *t)
    }
}

/// `<prefix><hex|base64 MAC>` in the scheme's header, over the body or over
/// `<timestamp>.<body>`. Returns the hex SHA-256 of what it covers.
pub fn check(secret: &[u8], scheme: &HmacScheme, req: &HookRequest<'_>, now: SystemTime) -> Result<String, HookError> {
    let name = &scheme.header;
    let value = header(req, name, name)?.trim();
    let encoded = value
        .strip_prefix(scheme.prefix.as_str())
        .ok_or_else(|| unauthorized(format!("{name} must start with {:?}", scheme.prefix)))?;
    let sig = match scheme.encoding {
        Encoding::Hex => hex::decode(encoded).map_err(|_| unauthorized(format!("{name} is not hex")))?,
        Encoding::Base64 => STANDARD
            .decode(encoded)
            .or_else(|_| URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')))
            .map_err(|_| unauthorized(format!("{name} is not base64")))?,
    };
    let ts = match &scheme.timestamp {
        None => None,
        Some((ts_header, tolerance)) => {
            let ts = header(req, ts_header, ts_header)?.trim();
            let at: i64 = ts.parse().map_err(|_| unauthorized(format!("{ts_header} is not a number")))?;
            check_age(ts_header, at, unix_secs(now), *tolerance)?;
            Some(ts)
        }
    };
    let signed: &[&[u8]] = match ts {
        None => &[req.body],
        Some(ts) => &[ts.as_bytes(), b".", req.body],
    };
    if mac_matches(scheme.algorithm, secret, signed, &sig) {
        Ok(sha256_hex(signed))
    } else {
        Err(unauthorized("signature does not match the body"))
    }
}

/// The signature header's value; `timestamp` is the value sent in the
/// scheme's timestamp header, if it has one.
pub fn sign(secret: &[u8], scheme: &HmacScheme, timestamp: Option<i64>, body: &[u8]) -> String {
    let raw = match timestamp {
        Some(t) => hmac_bytes(scheme.algorithm, secret, &[t.to_string().as_bytes(), b".", body]),
        None => hmac_bytes(scheme.algorithm, secret, &[body]),
    };
    let encoded = match scheme.encoding {
        Encoding::Hex => hex::encode(raw),
        Encoding::Base64 => STANDARD.encode(raw),
    };
    format!("{}{encoded}", scheme.prefix)
}

/// GitHub's form unless the flags say otherwise, read as the source's
/// `header`, `prefix`, `encoding`, `algorithm`, `timestamp_header`.
fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    let github = HmacScheme::github();
    let scheme = HmacScheme {
        header: out.signature_header.map_or(github.header, str::to_owned),
        prefix: out.prefix.map(str::to_owned).unwrap_or_else(|| if out.signature_header.is_none() { github.prefix } else { String::new() }),
        encoding: if out.encoding == Some("base64") { Encoding::Base64 } else { Encoding::Hex },
        algorithm: if out.algorithm == Some("sha1") { Algorithm::Sha1 } else { Algorithm::Sha256 },
        timestamp: None,
    };
    let ts = out.timestamp_header.map(|h| (h.to_owned(), unix_secs(out.now)));
    let mut headers = vec![(scheme.header.clone(), sign(out.secret.as_bytes(), &scheme, ts.as_ref().map(|t| t.1), body))];
    headers.extend(ts.map(|(h, t)| (h, t.to_string())));
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use crate::config::{Algorithm as MacAlg, Encoding, HmacScheme, SourceKind};
    use crate::secret::Secret;
    use crate::sign;
    use crate::verify::tests::*;
    use sha2::{Digest, Sha256};
    use std::time::Duration;

    #[test]
    fn generic_hmac_schemes() {
        let body = fixture("strapi/entry-publish.json");
        let secret = Secret::new("generic-secret-0123456789");
        // GitHub's defaults, unchanged: the published vector.
        let gh =
            source(SourceKind::Hmac { secret: Secret::new("It's a Secret to Everybody"), scheme: HmacScheme::github() }, None);
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        run(&gh, &[("X-Hub-Signature-256", sig)], b"Hello, World!", now()).unwrap();
        // base64 HMAC-SHA1 over "<t>.<body>", with a prefix and a timestamp header.
        let scheme = HmacScheme {
            header: "x-signature".into(),
            prefix: "v1=".into(),
            encoding: Encoding::Base64,
            algorithm: MacAlg::Sha1,
            timestamp: Some(("x-timestamp".into(), Duration::from_secs(300))),
        };
        let src = source(SourceKind::Hmac { secret, scheme }, None);
        // Python: base64(hmac(b"generic-secret-0123456789", b"1700000000." + body, sha1))
        let ok = [("X-Signature", "v1=jbnmp00Blq8xFKjFjaSRiGx6So0="), ("X-Timestamp", "1700000000")];
        if let SourceKind::Hmac { scheme, .. } = &src.kind {
            assert_eq!(sign::hmac_scheme(b"generic-secret-0123456789", scheme, Some(1_700_000_000), &body), ok[0].1);
        }
        let v = run(&src, &ok, &body, secs(1_700_000_000)).unwrap();
        // What it signed is the timestamp and the body.
        let signed = [&b"1700000000."[..], &body].concat();
        assert_eq!(v.signed_sha256, Some(hex::encode(Sha256::digest(&signed))));
        let r = |h: &[(&str, &str)], at| refused(run(&src, h, &body, secs(at)));
        assert!(r(&ok, 1_700_000_301).contains("tolerance"));
        assert!(r(&[ok[0], ("X-Timestamp", "1700000001")], 1_700_000_000).contains("does not match"));
        assert!(r(&[ok[0]], 1_700_000_000).contains("missing x-timestamp"));
        assert!(r(&[("X-Signature", "jbnmp00Blq8xFKjFjaSRiGx6So0="), ok[1]], 1_700_000_000).contains("must start with \"v1=\""));
        assert!(r(&[("X-Signature", "v1=@@@"), ok[1]], 1_700_000_000).contains("not base64"));
        assert!(r(&[ok[0], ("X-Timestamp", "later")], 1_700_000_000).contains("not a number"));
    }
}
