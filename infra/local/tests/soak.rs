//! Bounded soak: 200 WebSocket clients, dropped and reconnected at random,
//! follow 5,000 webhooks over 3 channels. Each follows the snippet's rule
//! (accept last+1, drop what it has seen, resubscribe with `since` on a gap)
//! and must end with every event exactly once, in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hookcast::settings::{self, DevSecrets, Overrides};
use hookcast_core::sign;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 200;
const EVENTS: u64 = 5_000;
const CHANNELS: [&str; 3] = ["soak-a", "soak-b", "soak-c"];

#[derive(Default)]
struct Figures {
    reconnects: AtomicU64,
    duplicates_dropped: AtomicU64,
    gaps_repaired: AtomicU64,
    delivered: AtomicU64,
}

async fn follow(
    ws_url: String,
    seed: u64,
    expected: HashMap<&'static str, u64>,
    figures: Arc<Figures>,
) -> HashMap<&'static str, Vec<u64>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut got: HashMap<&str, Vec<u64>> = CHANNELS.iter().map(|c| (*c, Vec::new())).collect();
    let last = |got: &HashMap<&str, Vec<u64>>, c: &str| got[c].last().copied().unwrap_or(0);
    loop {
        if CHANNELS.iter().all(|c| last(&got, c) == expected[c]) {
            return got;
        }
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&ws_url).await else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
            continue;
        };
        for c in CHANNELS {
            let sub = json!({"action": "subscribe", "channel": c, "since": last(&got, c)});
            if ws.send(Message::Text(sub.to_string().into())).await.is_err() {
                break;
            }
        }
        // Drop this connection after a random number of frames, abruptly.
        let mut budget: u32 = rng.random_range(50..3_000);
        let mut pending: HashMap<&str, bool> = HashMap::new();
        while budget > 0 {
            let msg = match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(_))) => continue,
                Ok(_) => break, // closed (e.g. too slow): reconnect and resume
                Err(_) => {
                    if CHANNELS.iter().all(|c| last(&got, c) == expected[c]) {
                        return got;
                    }
                    continue;
                }
            };
            budget -= 1;
            let v: Value = serde_json::from_str(msg.as_str()).unwrap();
            let Some(c) = CHANNELS.iter().find(|c| v["channel"] == **c).copied() else {
                continue;
            };
            match v["type"].as_str() {
                Some("subscribed") => {
                    pending.remove(c);
                }
                Some("event") => {
                    let seq = v["seq"].as_u64().unwrap();
                    let l = last(&got, c);
                    if seq <= l {
                        figures.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                    } else if seq == l + 1 {
                        got.get_mut(c).unwrap().push(seq);
                        figures.delivered.fetch_add(1, Ordering::Relaxed);
                    } else if !pending.contains_key(c) {
                        figures.gaps_repaired.fetch_add(1, Ordering::Relaxed);
                        pending.insert(c, true);
                        let sub = json!({"action": "subscribe", "channel": c, "since": l});
                        if ws.send(Message::Text(sub.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        figures.reconnects.fetch_add(1, Ordering::Relaxed);
        drop(ws);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_flapping_clients_get_every_event_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = DevSecrets {
        netlify: "n".into(),
        zapier: "z".into(),
        hmac: "soak-secret".into(),
        standard: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
    };
    let cli = Overrides { port: Some(0), data_dir: Some(dir.path().to_owned()), ..Default::default() };
    let mut s = settings::dev_settings(&secrets, &cli).unwrap();
    s.core.limits.history_max_events = 10_000; // clients away for a while still catch up
    let state = hookcast::state(&s, false).unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr, serving) = hookcast::bind(&s, state, async move {
        let _ = stop_rx.await;
    })
    .await
    .unwrap();
    let server = tokio::spawn(serving);

    let expected: HashMap<&'static str, u64> =
        CHANNELS.iter().enumerate().map(|(i, c)| (*c, (EVENTS - i as u64).div_ceil(3))).collect();
    let figures = Arc::new(Figures::default());
    let ws_url = format!("ws://{addr}/ws");
    let clients: Vec<_> =
        (0..CLIENTS).map(|i| tokio::spawn(follow(ws_url.clone(), i as u64, expected.clone(), figures.clone()))).collect();

    // The publisher: 5,000 signed webhooks, 8 in flight at a time.
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/hooks/hmac");
    futures::stream::iter(0..EVENTS)
        .for_each_concurrent(8, |n| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body = json!({"channel": CHANNELS[(n % 3) as usize], "event": "tick", "data": {"n": n}}).to_string();
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", sign::github(b"soak-secret", body.as_bytes()))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
            }
        })
        .await;

    let results = tokio::time::timeout(Duration::from_secs(240), futures::future::join_all(clients))
        .await
        .expect("clients did not converge: events were lost");
    for got in results {
        let got = got.unwrap();
        for c in CHANNELS {
            assert_eq!(got[c], (1..=expected[c]).collect::<Vec<_>>(), "{c}: every event once, in order");
        }
    }
    let f = &figures;
    eprintln!(
        "soak: {EVENTS} events x {CLIENTS} clients; delivered {}, reconnects {}, duplicates dropped {}, gaps repaired {}, lost 0",
        f.delivered.load(Ordering::Relaxed),
        f.reconnects.load(Ordering::Relaxed),
        f.duplicates_dropped.load(Ordering::Relaxed),
        f.gaps_repaired.load(Ordering::Relaxed),
    );
    stop_tx.send(()).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
