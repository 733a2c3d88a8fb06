//! Hostile senders and clients against the local binary over real sockets:
//! the shared bad-input table (each case refused with its status and code,
//! nothing stored, nothing sent), close codes, byte budgets, pings, caps,
//! deadlines, a second instance, private channels.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hookcast::server::AppState;
use hookcast::settings::{self, Overrides, Settings};
use hookcast_core::sign;
use hookcast_core::token::{mint, Claims};
use hookcast_testkit::hostile;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream};

mod common;
use common::{next, send, Ws, WAIT};

const ORIGIN: &str = "https://site.example";

struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    running: hookcast::Running,
}

fn table_settings(dir: &Path) -> Settings {
    let path = dir.join("hookcast.toml");
    std::fs::write(&path, hostile::CONFIG_TOML).unwrap();
    let cli = Overrides { port: Some(0), data_dir: Some(dir.join("data")), ..Default::default() };
    settings::load_file(&path, &cli).unwrap()
}

/// The table's settings with room for 100 KiB events (what fills a byte budget fast).
fn big_event_settings(dir: &Path) -> Settings {
    let mut settings = table_settings(dir);
    settings.core.limits.max_event_bytes = 100 * 1024;
    settings.core.limits.max_body_bytes = 200 * 1024;
    settings
}

impl Server {
    async fn start(s: &Settings) -> Self {
        let running = hookcast::spawn(s, false).await.unwrap();
        Server { addr: running.addr, state: running.state.clone(), running }
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    async fn ws(&self) -> Ws {
        let mut req = format!("ws://{}/ws", self.addr).into_client_request().unwrap();
        req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
        connect_async(req).await.unwrap().0
    }
    fn open_sockets(&self) -> usize {
        self.state.gateway.open_sockets()
    }
    async fn stop(self) -> Duration {
        let t = std::time::Instant::now();
        hookcast_testkit::within(WAIT, "shutdown, which is bounded", self.running.stop()).await.unwrap();
        t.elapsed()
    }
    /// A signed webhook with `pad` bytes of data on `news`, acknowledged.
    async fn post_news(&self, n: u32, pad: &str) {
        let (status, answer) = self.try_post_news(n, pad).await;
        assert_eq!(status, 200, "{answer}");
    }
    /// The same webhook, and the status and JSON body it got.
    async fn try_post_news(&self, n: u32, pad: &str) -> (u16, Value) {
        let body = json!({"channel": "news", "event": "big", "data": {"n": n, "pad": pad}}).to_string();
        let res = reqwest::Client::new()
            .post(self.url("/hooks/gh"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign::github(hostile::GH, body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }
}

/// Reads until the server closes; the close frame's code, if one came.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match hookcast_testkit::within(WAIT, "the server's close", ws.next()).await {
            Some(Ok(Message::Close(Some(c)))) => return Some(u16::from(c.code)),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Waits until the server has `n` open sockets (at most WAIT); says how many it had.
async fn open_sockets_reach(s: &Server, n: usize, what: &str) {
    hookcast_testkit::until_sync(WAIT, what, || match s.open_sockets() {
        open if open == n => Ok(()),
        open => Err(format!("{open} open sockets, want {n}")),
    })
    .await
}

async fn head(s: &Server, channel: &str) -> u64 {
    let token = mint(hostile::PRIVATE, &Claims { channels: vec!["*".into()], exp: 4e9 });
    let res = reqwest::Client::new().get(s.url(&format!("/channels/{channel}/events"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200, "{channel}");
    res.json::<Value>().await.unwrap()["head"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_input_table_is_refused_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&table_settings(dir.path())).await;
    // A page on every public channel the cases aim at: it must receive nothing.
    let mut page = s.ws().await;
    for c in hostile::CHANNELS.iter().filter(|c| !c.starts_with("orders/")) {
        send(&mut page, json!({"action": "subscribe", "channel": c})).await;
        assert_eq!(next(&mut page).await["type"], "subscribed");
    }
    let client = reqwest::Client::new();
    let cases = hostile::http_cases();
    for case in &cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut req = client.request(method, s.url(&case.path)).body(case.body.clone());
        for (k, v) in &case.headers {
            req = req.header(k, v);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = res.text().await.unwrap();
        assert_eq!((status, ct.as_str()), (case.status, "application/json"), "{}: {body}", case.name);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{}: not JSON: {body}", case.name));
        assert_eq!(v["error"], case.code, "{}: {body}", case.name);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty() && m.len() < 300), "{}: {body}", case.name);
    }
    for c in hostile::CHANNELS {
        assert_eq!(head(&s, c).await, 0, "{c}: a refused request stored something");
    }
    send(&mut page, json!({"action": "ping"})).await;
    assert_eq!(next(&mut page).await, json!({"type": "pong"}), "a refused request sent something");

    let frames = hostile::frame_cases();
    let mut ws = s.ws().await;
    for case in &frames {
        ws.send(Message::Text(case.frame.clone().into())).await.unwrap();
        let reply = next(&mut ws).await;
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(case.code)), "{}: {reply}", case.name);
    }
    ws.send(Message::Binary(vec![0, 1, 2].into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_message");
    assert_eq!(s.state.live.connections(), 2);
    eprintln!("bad-input table on the local binary: {} HTTP cases, {} frame cases + 1 binary", cases.len(), frames.len());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&table_settings(dir.path())).await;
    // 1009: a frame over the protocol's 32 KB, within tungstenite's limit and beyond it.
    for size in [40 * 1024, 200 * 1024] {
        let mut ws = s.ws().await;
        let _ = ws.send(Message::Text(json!({"action": "ping", "pad": "p".repeat(size)}).to_string().into())).await;
        assert_eq!(close_code(&mut ws).await, Some(1009), "{size} bytes");
    }
    // 1008: a flood of messages.
    let mut ws = s.ws().await;
    for _ in 0..400 {
        if ws.send(Message::Text(r#"{"action":"ping"}"#.into())).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, Some(1008));
    // 1012 at shutdown, so pages resume elsewhere at once.
    let mut ws = s.ws().await;
    send(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    let stopping = tokio::spawn(async move { s.stop().await });
    assert_eq!(close_code(&mut ws).await, Some(1012));
    stopping.await.unwrap();
}

/// Big events for a page that stopped reading: the server forgets it within a
/// bounded time (its queue is budgeted in bytes), whatever its writer was doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_stops_reading_is_dropped_and_its_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let settings = big_event_settings(dir.path());
    let s = Server::start(&settings).await;
    let mut stuck = s.ws().await;
    send(&mut stuck, json!({"action": "subscribe", "channel": "news"})).await;
    assert_eq!(next(&mut stuck).await["type"], "subscribed");
    let mut reader = s.ws().await;
    send(&mut reader, json!({"action": "subscribe", "channel": "news"})).await;
    assert_eq!(next(&mut reader).await["type"], "subscribed");
    // 40 MB of events: far beyond the 1 MiB budget plus what the kernel buffers.
    let pad = "x".repeat(90 * 1024);
    let mut max_queued = 0;
    for n in 0..450u32 {
        s.post_news(n, &pad).await;
        // The reading page keeps up and keeps every event.
        loop {
            let v = next(&mut reader).await;
            if v["data"]["n"] == n {
                break;
            }
        }
        max_queued = max_queued.max(s.state.gateway.queued_bytes());
        if s.open_sockets() == 1 {
            break;
        }
    }
    open_sockets_reach(&s, 1, "the stuck page to be forgotten").await;
    assert!(max_queued <= hookcast::gateway::LIVE_BUDGET + 100 * 1024, "queued {max_queued} bytes");
    hookcast_testkit::until_sync(WAIT, "the stuck page's subscriptions to be forgotten", || match s.state.live.connections() {
        1 => Ok(()),
        n => Err(format!("{n} connections hold subscriptions")),
    })
    .await;
    // Its client, reading at last, gets what was sent and then the end, not a hang.
    let mut frames = 0;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(WAIT, stuck.next()).await {
        if m.is_close() {
            break;
        }
        frames += 1;
    }
    eprintln!("stuck page dropped after {frames} frames; largest queue {max_queued} bytes");
    s.stop().await;
}

/// A page that stops reading for a while, then reads: every event arrives
/// whole and in order, with the server's pings and its pongs to the page's
/// pings between them. The fan-out writes straight to a socket until the
/// kernel takes no more; the rest waits in the socket's queue, and frames
/// pushed meanwhile (events, pings, pongs) queue behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_pauses_gets_every_frame_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = big_event_settings(dir.path());
    settings.ping_every = Duration::from_millis(20);
    settings.idle_limit = Duration::from_secs(30);
    let s = Server::start(&settings).await;
    // A small receive window, so the kernel soon takes no more.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(s.addr).await.unwrap();
    let mut req = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    let (mut page, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await.unwrap();
    send(&mut page, json!({"action": "subscribe", "channel": "news"})).await;
    assert_eq!(next(&mut page).await["type"], "subscribed");
    // Events of 20 KiB posted while the page reads nothing and sends pings:
    // until the kernel takes no more and frames wait in the queue, then five
    // more (well within the 1 MiB budget).
    let pad = "x".repeat(20 * 1024);
    let (mut events, mut queued_at) = (0u32, None);
    while queued_at.is_none_or(|q| events < q + 5) {
        assert!(events < 1000, "20 MB posted and nothing ever waited in the queue");
        s.post_news(events, &pad).await;
        page.send(Message::Ping(events.to_be_bytes().to_vec().into())).await.unwrap();
        common::fanned_out(&s.state, "the event to be fanned out").await;
        events += 1;
        if queued_at.is_none() && s.state.gateway.queued_bytes() > 0 {
            queued_at = Some(events);
        }
    }
    let most_queued = s.state.gateway.queued_bytes();
    let (mut seen, mut pongs, mut pings) = (0u32, 0u32, 0);
    while seen < events || pongs < events {
        match hookcast_testkit::within(WAIT, "a frame", page.next()).await.expect("socket open").unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("a whole JSON frame");
                assert_eq!(v["data"]["n"], seen, "events in order");
                assert_eq!(v["data"]["pad"].as_str().map(str::len), Some(pad.len()));
                seen += 1;
            }
            Message::Pong(p) => {
                assert_eq!(p.as_ref(), pongs.to_be_bytes(), "pongs in order");
                pongs += 1;
            }
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("{events} events, the queue reached at {queued_at:?}, {most_queued} bytes queued at the end; {pings} pings from the server");
    assert_eq!(s.open_sockets(), 1, "the page is still open");
    s.stop().await;
}

/// An event reaches idle sockets by the fan-out's own writes, every one of
/// them: no socket's writer is woken, whatever the audience (tokio's
/// per-task budget once cut the fan-out's writes off after 128 sockets and
/// left the rest to their writers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_writes_straight_to_every_idle_socket() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&table_settings(dir.path())).await;
    let mut pages = Vec::new();
    for _ in 0..300 {
        let mut page = s.ws().await;
        send(&mut page, json!({"action": "subscribe", "channel": "news"})).await;
        assert_eq!(next(&mut page).await["type"], "subscribed");
        pages.push(page);
    }
    s.post_news(1, "").await;
    for page in &mut pages {
        assert_eq!(next(page).await["data"]["n"], 1);
    }
    assert_eq!(s.state.gateway.pushes(), (300, 0), "(written straight, left to the sockets' writers)");
    s.stop().await;
}

/// An SSE client that reads nothing has the WebSocket's byte budget: past
/// it, it is forgotten (no subscription, no queue) at once, not when its
/// connection's write finally stalls out. Red before: still subscribed
/// seconds after 8 MB were pushed at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_reads_nothing_is_dropped_at_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = big_event_settings(dir.path());
    // Not the connection's write stall: the budget alone must drop it.
    settings.net.write_stall = Duration::from_secs(600);
    let s = Server::start(&settings).await;
    let mut stuck = TcpStream::connect(s.addr).await.unwrap();
    stuck.write_all(b"GET /sse?channel=news HTTP/1.1\r\nhost: x\r\norigin: https://site.example\r\n\r\n").await.unwrap();
    open_sockets_reach(&s, 1, "the SSE client to be registered").await;
    hookcast_testkit::until_sync(WAIT, "the SSE client to subscribe", || match s.state.live.connections() {
        1 => Ok(()),
        n => Err(format!("{n} connections hold subscriptions")),
    })
    .await;
    let pad = "x".repeat(90 * 1024);
    let mut pushed = 0;
    for n in 0..90u32 {
        s.post_news(n, &pad).await;
        pushed += 90 * 1024;
        if s.state.live.connections() == 0 {
            break;
        }
    }
    hookcast_testkit::until_sync(WAIT, "the SSE client's subscription to be forgotten", || match s.state.live.connections() {
        0 => Ok(()),
        n => Err(format!("{n} connections hold subscriptions")),
    })
    .await;
    assert_eq!(s.open_sockets(), 0, "its queue is gone too");
    assert!(s.state.gateway.queued_bytes() <= hookcast::gateway::LIVE_BUDGET, "{} bytes queued", s.state.gateway.queued_bytes());
    eprintln!("SSE client forgotten after {pushed} bytes pushed");
    drop(stuck);
    s.stop().await;
}

/// Repeating a subscribe with since=0 without reading: the server stops
/// reading the client's messages until its replies drain, so queued bytes
/// stay near one replay, not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_amplification_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let settings = big_event_settings(dir.path());
    let s = Server::start(&settings).await;
    let pad = "x".repeat(50 * 1024);
    for n in 0..100u32 {
        s.post_news(n, &pad).await;
    }
    // A raw socket: the handshake, then 50 subscribes, never reading a byte.
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {ORIGIN}\r\n\r\n",
            s.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let frame = masked_text(br#"{"action":"subscribe","channel":"news","since":0}"#);
    for _ in 0..50 {
        if tcp.write_all(&frame).await.is_err() {
            break;
        }
    }
    let one_replay = 100 * 51 * 1024;
    let mut max_queued = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        max_queued = max_queued.max(s.state.gateway.queued_bytes());
    }
    assert!(max_queued <= 2 * one_replay, "queued {max_queued} bytes for 50 unread replays of {one_replay}");
    eprintln!("50 unread replays of ~{one_replay} bytes: at most {max_queued} bytes queued");
    drop(tcp);
    s.stop().await;
}

/// A client-to-server text frame (clients must mask).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81];
    assert!(payload.len() < 126);
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_are_found_by_pings_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = table_settings(dir.path());
    // The server's settings are shortened for the test (75 s in use); the test's waits stay ceilings.
    settings.ping_every = Duration::from_millis(250);
    // Generous against a busy CI machine: a live page whose reads are delayed must never look vanished.
    settings.idle_limit = Duration::from_secs(5);
    let s = Server::start(&settings).await;
    // A client that completed the handshake and then vanished (never answers a ping).
    let mut gone = TcpStream::connect(s.addr).await.unwrap();
    gone.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            s.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = gone.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    // A live page, opened after the vanished one: its client answers pings while it reads.
    let mut live = s.ws().await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reading = tokio::spawn(async move {
        let mut pings = 0;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                m = live.next() => match m {
                    Some(Ok(m)) => pings += usize::from(m.is_ping()),
                    other => panic!("the live page's socket ended: {other:?}"),
                },
            }
        }
        (pings, live)
    });
    // Both are open first (else the count of 1 below could be the live page alone, before the other registered).
    open_sockets_reach(&s, 2, "both clients to be open").await;
    open_sockets_reach(&s, 1, "the vanished client to be dropped").await;
    // The live page has now outlived the idle limit, answering pings.
    stop.send(()).unwrap();
    let (pings, mut live) = reading.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert!(pings >= 2, "the live page was pinged {pings} times");
    assert_eq!(s.open_sockets(), 1, "the live page is kept");
    send(&mut live, json!({"action": "ping"})).await;
    assert_eq!(next(&mut live).await["type"], "pong", "the live page still answers");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_with_a_clear_refusal() {
    let _busy = hookcast_testkit::BusyCore::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = table_settings(dir.path());
    settings.max_connections = 3;
    settings.net.max_connections = 8;
    let s = Server::start(&settings).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(s.ws().await);
    }
    let mut req = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    match connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 503);
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "too_many_connections");
        }
        other => panic!("a fourth socket: {other:?}"),
    }
    // HTTP connections all in a request (a head, then a body that never
    // comes): the next one is held until they are, then answered with a
    // JSON 503 after its request, as any HTTP client expects it.
    let mut busy = Vec::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST /hooks/gh HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\"")
            .await
            .unwrap();
        busy.push(c);
    }
    let res = hookcast_testkit::within(WAIT, "the answer past the cap", reqwest::get(s.url("/healthz"))).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "too_many_connections");
    let idle = busy;
    drop(idle);
    drop(open);
    s.stop().await;
}

/// Under a 1,024 open-file limit the HTTP cap is 256 (`net::default_caps`).
/// 1,030 idle connections, half of them with a partial head, from one
/// address, with a core kept busy: each new one takes the place of an idle
/// connection of that address, and none is refused while some only wait, so
/// webhooks from the same address, sent at once, still get through.
/// (Red before: every webhook answered 503 too_many_connections; then, on a
/// busy machine, a webhook refused or answered before it asked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_connections_cannot_lock_webhooks_out() {
    let _busy = hookcast_testkit::BusyCore::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = table_settings(dir.path());
    settings.net.max_connections = 256;
    let s = Server::start(&settings).await;
    let mut held = Vec::new();
    for i in 0..1030 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        if i % 2 == 0 {
            // One refused at the cap may be closed already: that is fine.
            let _ = c.write_all(b"POST /hooks/gh HTTP/1.1\r\nhost: x\r\n").await;
        }
        held.push(c);
    }
    for n in 0..10 {
        s.post_news(n, "").await;
    }
    assert_eq!(head(&s, "news").await, 10);
    drop(held);
    s.stop().await;
}

/// The database files deleted while the server runs: appends are refused
/// with 503 (an acknowledged webhook would go into an unlinked file and be
/// gone after a restart). Red before: seqs 2, 3 and 4 acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_refuses_appends_instead_of_losing_them() {
    let dir = tempfile::tempdir().unwrap();
    let settings = table_settings(dir.path());
    let s = Server::start(&settings).await;
    s.post_news(0, "").await;
    let mut deleted = 0;
    for f in std::fs::read_dir(&settings.data_dir).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("hookcast.db") {
            std::fs::remove_file(f.path()).unwrap();
            deleted += 1;
        }
    }
    assert!(deleted >= 1, "no database file found in {}", settings.data_dir.display());
    for n in 1..=3 {
        let (status, answer) = s.try_post_news(n, "").await;
        assert_eq!((status, answer["error"].as_str()), (503, Some("unavailable")), "webhook {n}: {answer}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_bodies_time_out_and_shutdown_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = table_settings(dir.path());
    settings.net.header_timeout = Duration::from_millis(500);
    settings.net.shutdown_grace = Duration::from_millis(500);
    settings.core.limits.body_timeout = Duration::from_secs(1);
    let s = Server::start(&settings).await;

    // Headers trickled a byte at a time: the connection is closed.
    let mut trickle = TcpStream::connect(s.addr).await.unwrap();
    let head = b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in head.iter().cycle() {
        if started.elapsed() > WAIT {
            break;
        }
        if trickle.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), trickle.read(&mut buf)).await {
            closed = n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 4");
            if closed {
                break;
            }
        }
    }
    assert!(closed, "a trickled head kept its connection for {:?}", started.elapsed());
    s.stop().await;

    // A body that never completes: 408 JSON after the body deadline. A
    // server of its own, with the head deadline left at its default: on a
    // busy machine, 500 ms can pass before a head sent at once is read.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = table_settings(dir.path());
    settings.core.limits.body_timeout = Duration::from_secs(1);
    let s = Server::start(&settings).await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"chan")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, slow.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"body_timeout""#), "{answer}");

    s.stop().await;

    // An upload in progress does not hold shutdown beyond its grace. Its body
    // deadline is far off, so only the grace can end it within the ceiling.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = table_settings(dir.path());
    settings.net.shutdown_grace = Duration::from_millis(500);
    settings.core.limits.body_timeout = Duration::from_secs(3600);
    let s = Server::start(&settings).await;
    let mut upload = TcpStream::connect(s.addr).await.unwrap();
    upload
        .write_all(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    // Connections are accepted in order: once a later one is answered, the upload's is being served.
    hookcast_testkit::until(WAIT, "a connection after the upload's to be answered", || async {
        let mut probe = TcpStream::connect(s.addr).await.unwrap();
        probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        let _ = probe.read_to_string(&mut answer).await;
        if answer.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("healthz answered {answer:?}"))
        }
    })
    .await;
    let took = s.stop().await;
    assert!(took < WAIT / 2, "shutdown took {took:?} with an upload in progress (grace 500 ms, body deadline 1 h)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_one_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = table_settings(dir.path());
    let first = hookcast::state(&settings, false).unwrap();
    let second = hookcast::state(&settings, false).err().expect("a second instance must not start");
    assert!(matches!(second, hookcast::error::Error::DataDir(_)), "{second:?}");
    let second = second.to_string();
    assert!(second.contains("another hookcast is already running"), "{second}");
    drop(first);
    assert!(hookcast::state(&settings, false).is_ok(), "the lock goes with the first instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_rejections_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&table_settings(dir.path())).await;
    let res = reqwest::get(s.url("/ws")).await.unwrap();
    assert!(res.status().is_client_error());
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "websocket_upgrade_required");
    let res =
        reqwest::Client::new().get(s.url("/sse?channel=news")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "origin_not_allowed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_open_with_a_token_from_hookcast_token() {
    let dir = tempfile::tempdir().unwrap();
    let settings = table_settings(dir.path());
    let s = Server::start(&settings).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .args(["token", "--channel", "orders/*", "--ttl", "10m", "--config"])
        .arg(dir.path().join("hookcast.toml"))
        .env_remove("HOOKCAST_SUBSCRIBE_SECRET")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut ws = s.ws().await;
    send(&mut ws, json!({"action": "subscribe", "channel": "orders/1", "token": token})).await;
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    let res = reqwest::get(s.url(&format!("/channels/orders/1/events?token={token}"))).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = reqwest::get(s.url("/channels/orders/1/events")).await.unwrap();
    assert_eq!(res.status(), 403);
    // SSE takes the token as ?token= (EventSource cannot set headers).
    let first_sse_data = |url: String| async move {
        let mut res = reqwest::get(url).await.unwrap();
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = tokio::time::timeout(WAIT, res.chunk()).await.unwrap().unwrap().expect("an SSE event");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let data = text.lines().find_map(|l| l.strip_prefix("data:")).unwrap().trim().to_owned();
        serde_json::from_str::<Value>(&data).unwrap()
    };
    let with = first_sse_data(s.url(&format!("/sse?channel=orders/1&token={token}"))).await;
    assert_eq!(with["type"], "subscribed", "{with}");
    let without = first_sse_data(s.url("/sse?channel=orders/1")).await;
    assert_eq!(without["code"], "forbidden", "{without}");
    s.stop().await;
}
