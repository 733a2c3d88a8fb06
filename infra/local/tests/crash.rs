//! kill -9 in the middle of a webhook stream: every webhook that was
//! acknowledged (200) is in the history after a restart, with the seq it was
//! acknowledged with, and a resuming client receives them in order. The
//! channel keeps a merge state: after the restart it is exactly the fold of
//! the events up to the head (a state ahead of or behind its seq would show).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hookcast_core::sign;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

mod common;

const SECRET: &str = "crash-test-hmac-secret";

async fn start(dir: &std::path::Path, config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(dir)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (url, mut lines) = common::banner(&mut child, "hookcast dev's banner").await;
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_webhook_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookcast.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nhistory_max_events = 10000\n[sources.app]\nkind = \"hmac\"\nsecret = \"{SECRET}\"\nchannels = [\"crash\"]\n\
             fields = [\"n\", \"seen\"]\n\
             [state]\n\"crash\" = \"merge\"\n"
        ),
    )
    .unwrap();
    let (mut child, url) = start(dir.path(), &config).await;

    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let client = reqwest::Client::new();
    let senders = (0..8u64).map(|w| {
        let (acked, client, url) = (acked.clone(), client.clone(), url.clone());
        tokio::spawn(async move {
            for i in 0..200u64 {
                let n = w * 1000 + i;
                let body = json!({"channel": "crash", "event": "tick", "data": {"n": n, "seen": {n.to_string(): 1}}}).to_string();
                let res = client
                    .post(format!("{url}/hooks/app"))
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", sign::github(SECRET.as_bytes(), body.as_bytes()))
                    .body(body)
                    .send()
                    .await;
                let Ok(res) = res else { return }; // the server is gone
                if res.status() == 200 {
                    let v: Value = res.json().await.unwrap_or_default();
                    if let Some(seq) = v["seq"].as_u64() {
                        acked.lock().unwrap().push((n, seq));
                    }
                }
            }
        })
    });
    let senders: Vec<_> = senders.collect();
    // Kill once a good part of the stream was acknowledged, mid-flight.
    // Polled tightly, so the kill lands mid-stream; the ceiling is for a stream that never gets going.
    let began = tokio::time::Instant::now();
    while acked.lock().unwrap().len() < 300 {
        let n = acked.lock().unwrap().len();
        assert!(began.elapsed() < 4 * hookcast_testkit::LOCAL, "gave up waiting for 300 acknowledged webhooks; {n} so far");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300 && acked.len() < 1600, "killed mid-stream: {} acknowledged", acked.len());

    let (_child, url) = start(dir.path(), &config).await;
    let h: Value = reqwest::get(format!("{url}/channels/crash/events?since=0")).await.unwrap().json().await.unwrap();
    let events = h["events"].as_array().unwrap();
    let head = h["head"].as_u64().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "gapless, in order");
    for (n, seq) in &acked {
        let e = &events[(*seq - 1) as usize];
        assert_eq!(e["data"]["n"].as_u64(), Some(*n), "acknowledged event {n} kept its seq {seq}");
    }
    // The state read with the head is the fold of events 1..=head, no more, no less.
    assert_eq!(h["mode"], "merge");
    let seen = h["state"]["seen"].as_object().expect("a merge state");
    let want: std::collections::BTreeSet<String> = events.iter().map(|e| e["data"]["n"].to_string()).collect();
    assert_eq!(seen.keys().cloned().collect::<std::collections::BTreeSet<_>>(), want, "state and seq committed together");
    assert_eq!(h["state"]["n"], events.last().unwrap()["data"]["n"], "the state is the newest event's, in seq order");

    // A client that had seen seq 100 resumes and gets the rest, in order.
    let ws_url = url.replacen("http://", "ws://", 1) + "/ws";
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    ws.send(Message::Text(json!({"action":"subscribe","channel":"crash","since":100}).to_string().into())).await.unwrap();
    let mut got = Vec::new();
    loop {
        let msg =
            hookcast_testkit::within(hookcast_testkit::LOCAL, "the replay after the restart", ws.next()).await.unwrap().unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["type"] == "subscribed" {
            assert_eq!(v["seq"].as_u64(), Some(head));
            break;
        }
        got.push(v["seq"].as_u64().unwrap());
    }
    assert_eq!(got, (101..=head).collect::<Vec<_>>());
    eprintln!("kill -9 after {} acknowledged webhooks; {head} in the log after restart", acked.len());
}

/// SIGTERM: every open socket is told 1012 (resume elsewhere with since)
/// before the process ends, and it ends cleanly. The sockets run on their
/// own runtime, so the process must wait for their close frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_with_1012_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookcast.toml");
    std::fs::write(&config, format!("[sources.app]\nkind = \"hmac\"\nsecret = \"{SECRET}\"\nchannels = [\"*\"]\nfields = []\n"))
        .unwrap();
    let (mut child, url) = start(dir.path(), &config).await;
    let ws_url = url.replacen("http://", "ws://", 1) + "/ws";
    let mut sockets = Vec::new();
    for i in 0..20 {
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let sub = json!({"action": "subscribe", "channel": format!("c{i}")}).to_string();
        ws.send(Message::Text(sub.into())).await.unwrap();
        loop {
            let m = hookcast_testkit::within(hookcast_testkit::LOCAL, "subscribed", ws.next()).await.unwrap().unwrap();
            if m.to_text().unwrap_or_default().contains("\"subscribed\"") {
                break;
            }
        }
        sockets.push(ws);
    }
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for mut ws in sockets {
        let code = hookcast_testkit::within(hookcast_testkit::LOCAL, "the close frame", async {
            while let Some(m) = ws.next().await {
                if let Ok(Message::Close(frame)) = m {
                    return frame.map(|f| u16::from(f.code));
                }
                if m.is_err() {
                    return None;
                }
            }
            None
        })
        .await;
        assert_eq!(code, Some(1012), "every socket hears 1012 before the process ends");
    }
    let status = hookcast_testkit::within(hookcast_testkit::LOCAL, "the process to exit", child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status}");
}
