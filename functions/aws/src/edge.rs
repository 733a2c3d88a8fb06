//! The edge option (template.yaml, `EdgeWebAclArn`): a CloudFront
//! distribution with AWS WAF in front of both APIs. CloudFront adds
//! `X-Hookcast-Edge: <EdgeOriginSecret>` to every request it sends on (an
//! origin custom header, set over any header of that name a viewer sends)
//! and the viewer's address and port in `CloudFront-Viewer-Address`.
//!
//! With the secret configured, a request without it did not pass the WAF
//! (it went to the `execute-api` endpoint directly) and is refused before it
//! touches anything; a request with it is counted against the viewer's
//! address, not CloudFront's (every visitor reaches API Gateway from a few
//! CloudFront addresses, which the per-address budgets would otherwise
//! share out among everyone). Without the secret, both headers are ignored:
//! anyone can send them.

use lambda_http::http::HeaderMap;

/// CloudFront's origin custom header.
pub const HEADER: &str = "x-hookcast-edge";
/// The viewer's `address:port` (IPv6 unbracketed: the port follows the last colon).
pub const VIEWER_ADDRESS: &str = "cloudfront-viewer-address";

/// Whether the request may be served: always without an edge secret; with
/// one, only when it carries it (compared in constant time).
pub fn admits(secret: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(secret) = secret else { return true };
    let given = headers.get(HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    given.len() == secret.len() && given.iter().zip(secret.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The body of the 403 an HTTP request that did not come through the edge gets.
pub const REFUSED: &str = r#"{"error":"forbidden","message":"this endpoint is served through the stack's CloudFront distribution (its EdgeUrl output)"}"#;

/// The client's address: the viewer's when the request came through the
/// edge, the one API Gateway saw without an edge secret. `None` when a
/// request through the edge names no viewer (CloudFront's origin request
/// policy lost the header): counting it against CloudFront's address would
/// share one budget among every visitor.
pub fn client_address(secret: Option<&str>, headers: &HeaderMap, source_ip: &str) -> Option<String> {
    if secret.is_none() || !admits(secret, headers) {
        return Some(source_ip.to_owned());
    }
    headers
        .get(VIEWER_ADDRESS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit_once(':'))
        .map(|(ip, _port)| ip.trim())
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        use lambda_http::http::{HeaderName, HeaderValue};
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn without_a_secret_every_request_is_admitted_and_viewer_headers_are_not_believed() {
        let h = headers(&[(VIEWER_ADDRESS, "198.51.100.10:46532"), (HEADER, "anything")]);
        assert!(admits(None, &h));
        assert_eq!(client_address(None, &h, "203.0.113.5").as_deref(), Some("203.0.113.5"));
    }

    #[test]
    fn with_a_secret_only_requests_carrying_it_pass() {
        assert!(!admits(Some(SECRET), &headers(&[])));
        assert!(!admits(Some(SECRET), &headers(&[(HEADER, "0123456789abcdef0123456789abcdeX")])));
        assert!(!admits(Some(SECRET), &headers(&[(HEADER, "0123456789abcdef")])));
        assert!(admits(Some(SECRET), &headers(&[(HEADER, SECRET)])));
    }

    #[test]
    fn through_the_edge_the_viewer_is_the_client() {
        let via = |addr: &'static str| headers(&[(HEADER, SECRET), (VIEWER_ADDRESS, addr)]);
        let addr = |h: &HeaderMap| client_address(Some(SECRET), h, "130.176.1.1");
        assert_eq!(addr(&via("198.51.100.10:46532")).as_deref(), Some("198.51.100.10"));
        assert_eq!(addr(&via("2001:db8::8a2e:370:7334:46532")).as_deref(), Some("2001:db8::8a2e:370:7334"));
        // Through the edge with no viewer (or not an address): refused, never CloudFront's.
        assert_eq!(addr(&via("nonsense")), None);
        assert_eq!(addr(&headers(&[(HEADER, SECRET)])), None);
        // A viewer header without the secret is anyone's claim.
        let forged = headers(&[(VIEWER_ADDRESS, "198.51.100.10:1")]);
        assert_eq!(client_address(Some(SECRET), &forged, "203.0.113.5").as_deref(), Some("203.0.113.5"));
    }
}
