//! `hookcast serve` over TLS with certificate files: a real WebSocket client
//! that verifies the certificate subscribes over wss://, a webhook arrives
//! over https://, and a client that does not trust the certificate is refused.

use std::sync::Arc;

use futures::SinkExt;
use hookcast::settings::{self, Overrides};
use hookcast_core::sign;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

fn client_config(trusted: Option<&rcgen::Certificate>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(cert) = trusted {
        roots.add(cert.der().clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

mod common;
use common::{next_text_json as next_json, Ws as Wss};

async fn subscribe_news(ws: &mut Wss) {
    ws.send(Message::Text(json!({"action": "subscribe", "channel": "news"}).to_string().into())).await.unwrap();
    assert_eq!(next_json(ws, "the subscribe's answer").await["type"], "subscribed");
}

/// A signed webhook to the hmac source over https, acknowledged.
async fn post_news(https: &reqwest::Client, port: u16, secret: &str, data: Value) {
    let body = json!({"channel": "news", "event": "post", "data": data}).to_string();
    let res = https
        .post(format!("https://localhost:{port}/hooks/hmac"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign::github(secret.as_bytes(), body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_with_a_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let secrets = common::dev_secrets("tls-netlify-secret-0123", "tls-zapier-token-0123", "tls-hmac-secret-0123");
    let cli = Overrides {
        port: Some(0),
        data_dir: Some(dir.path().join("data")),
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path.clone()),
        ..Default::default()
    };
    let mut settings = settings::dev_settings(&secrets, &cli).unwrap();
    // No ping tick comes along to wake a writer that waits for nothing.
    settings.ping_every = std::time::Duration::from_secs(3600);
    settings.idle_limit = std::time::Duration::from_secs(3600);
    // The padded events below carry their padding to the page.
    settings.core.sources.get_mut("hmac").unwrap().fields.get_or_insert_with(Vec::new).push("pad".into());
    let running = hookcast::spawn(&settings, false).await.unwrap();
    let addr = running.addr;
    let wss = format!("wss://localhost:{}/ws", addr.port());

    // Not trusted: the handshake fails on verification.
    let refused =
        tokio_tungstenite::connect_async_tls_with_config(&wss, None, false, Some(Connector::Rustls(client_config(None)))).await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");

    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(&wss, None, false, Some(Connector::Rustls(client_config(Some(&cert)))))
            .await
            .unwrap();
    subscribe_news(&mut ws).await;

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    post_news(&https, addr.port(), &secrets.hmac, json!({"title": "over TLS"})).await;
    assert_eq!(next_json(&mut ws, "the event over wss").await["data"]["title"], "over TLS");

    ws.close(None).await.unwrap();

    // A page with a small receive window that reads nothing while events
    // arrive, until the kernel takes no more and frames wait in the queue:
    // the fan-out's writes, the TLS layer's own buffer and the socket's
    // writer share one connection, and every event still arrives whole and
    // in order once the page reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    let (mut paused, _) =
        tokio_tungstenite::client_async_tls_with_config(&wss, tcp, None, Some(Connector::Rustls(client_config(Some(&cert)))))
            .await
            .unwrap();
    subscribe_news(&mut paused).await;
    let pad = "t".repeat(8 * 1024);
    let (mut events, mut queued_at) = (0u64, None);
    while queued_at.is_none_or(|q| events < q + 20) {
        assert!(events < 500, "4 MB posted and nothing ever waited in the queue");
        post_news(&https, addr.port(), &secrets.hmac, json!({"n": events, "pad": pad})).await;
        common::fanned_out(&running.state, "the event to be fanned out").await;
        events += 1;
        if queued_at.is_none() && running.state.gateway.queued_bytes() > 0 {
            queued_at = Some(events);
        }
    }
    for n in 0..events {
        let ev = next_json(&mut paused, "a burst's event over wss").await;
        assert_eq!((ev["data"]["n"].as_u64(), ev["data"]["pad"].as_str().map(str::len)), (Some(n), Some(pad.len())));
    }

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new().get(format!("http://localhost:{}/healthz", addr.port())).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // A key that does not match the certificate is a clear start-up error.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("other.pem"), other.serialize_pem()).unwrap();
    let bad = Overrides { tls_key: Some(dir.path().join("other.pem")), ..cli.clone() };
    let err = settings::dev_settings(&secrets, &bad).unwrap_err();
    assert!(matches!(err, hookcast::error::Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("do not go together"), "{err}");
    hookcast_testkit::within(hookcast_testkit::LOCAL, "the server to stop", running.stop()).await.unwrap();
}
