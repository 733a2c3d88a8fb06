//! What the local binary's test files share: starting it, reading its
//! banner, WebSocket clients, webhooks and waits. Each test file uses some.
#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hookcast::server::AppState;
use hookcast::settings::DevSecrets;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// A ceiling for a stuck run (hookcast_testkit), not a guess at how long the work takes.
pub const WAIT: Duration = hookcast_testkit::LOCAL;

/// The dev sources' secrets (the Standard Webhooks one is the same everywhere).
pub fn dev_secrets(netlify: &str, zapier: &str, hmac: &str) -> DevSecrets {
    DevSecrets {
        netlify: netlify.into(),
        zapier: zapier.into(),
        hmac: hmac.into(),
        standard: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
    }
}

/// The binary's first line on stdout, `hookcast listening on URL`: the URL,
/// and the rest of its stdout.
pub async fn banner(child: &mut Child, what: &str) -> (String, Lines<BufReader<ChildStdout>>) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = hookcast_testkit::within(WAIT, what, lines.next_line()).await.unwrap().unwrap();
    let url = first.strip_prefix("hookcast listening on ").expect("banner").to_owned();
    (url, lines)
}

/// A WebSocket client on the server's `/ws`.
pub async fn ws_connect(addr: impl std::fmt::Display) -> Ws {
    connect_async(format!("ws://{addr}/ws")).await.unwrap().0
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame as JSON, failing after WAIT.
pub async fn next(ws: &mut Ws) -> Value {
    hookcast_testkit::next_json(ws, WAIT, "a frame").await
}

/// The next frame, as JSON (it must be text, within WAIT), saying what it waited for.
pub async fn next_text_json(ws: &mut Ws, what: &str) -> Value {
    match hookcast_testkit::within(WAIT, what, ws.next()).await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// A POST, and the status and JSON body it got.
pub async fn post(url: &str, content_type: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new().post(url).header("content-type", content_type).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    (status, serde_json::from_str(&res.text().await.unwrap()).unwrap(), ct)
}

/// Waits (at most WAIT) until every committed event has been fanned out.
pub async fn fanned_out(state: &AppState, what: &str) {
    hookcast_testkit::until_sync(WAIT, what, || match state.log.backlog().events() {
        0 => Ok(()),
        b => Err(format!("{b} events not yet fanned out")),
    })
    .await
}
