//! `hookcast listen`: follow channels exactly as a page does (same protocol,
//! `since`, reconnects), print each event as a JSON line, and exit 0 when the
//! awaited event arrives, or non-zero with a clear message on timeout. For
//! CI: a post-deploy step waits for `deploy.succeeded` on the live site.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures::{SinkExt, StreamExt};

use crate::error::Error;
use hookcast_core::{Channel, ClientMsg, ServerMsg};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// The WebSocket URL: ws://127.0.0.1:8787/ws, or the stack's wss:// URL.
    #[arg(long)]
    pub url: String,
    /// A channel to follow. Repeatable.
    #[arg(long = "channel", required = true)]
    pub channels: Vec<String>,
    /// Exit 0 when an event with this name arrives (`deploy.*` allowed).
    #[arg(long)]
    pub until: Option<String>,
    /// Give up after this long (e.g. 120s, 10m); exit 1 if --until has not arrived.
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// Replay from after this seq first (default: only events from now on).
    #[arg(long)]
    pub since: Option<u64>,
    /// A subscribe token, for private channels.
    #[arg(long, env = "HOOKCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The Origin header to send, when the server allows only some origins.
    #[arg(long)]
    pub origin: Option<String>,
}

/// How a listen ended; the process exit code follows it.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The awaited event arrived (or, without --until, the time ran out).
    Done,
    /// --until did not arrive in time.
    TimedOut(String),
    /// The server refused: a bad channel, a missing token, a refused origin.
    Refused(String),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::TimedOut(_) => 1,
            Outcome::Refused(_) => 2,
        }
    }
}

fn matches(filter: &str, name: &str) -> bool {
    filter.strip_suffix('*').map_or(filter == name, |prefix| name.starts_with(prefix))
}

/// Runs until `--until` arrives, the timeout passes, or the server refuses.
/// Event frames go to `out` as JSON lines; progress goes to `log`.
pub async fn run(args: &ListenArgs, out: &mut (dyn Write + Send), log: &mut (dyn Write + Send)) -> Result<Outcome, Error> {
    let timeout =
        humantime::parse_duration(&args.timeout).map_err(|e| Error::Usage(format!("--timeout {:?}: {e}", args.timeout)))?;
    let channels = args
        .channels
        .iter()
        .map(|c| Channel::parse(c).map_err(|e| Error::Usage(format!("--channel {c:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, follow(args, &channels, out, log)).await {
        // Flags were checked above: what fails now is the server or the connection to it.
        Ok(r) => r.map_err(Error::Network),
        Err(_) => Ok(match &args.until {
            Some(u) => Outcome::TimedOut(format!(
                "timed out after {} waiting for {u} on {}",
                humantime::format_duration(timeout),
                args.channels.join(", ")
            )),
            None => Outcome::Done,
        }),
    }
}

/// The wait before the next reconnect: core's backoff (capped exponential,
/// full jitter), as the server side and the snippet back off.
fn next_wait(attempt: &mut u32) -> Duration {
    let wait = hookcast_core::backoff::full_jitter(*attempt, RETRY_BASE, RETRY_CAP, rand::random());
    *attempt += 1;
    wait
}

const RETRY_BASE: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(10);

async fn follow(
    args: &ListenArgs,
    channels: &[Channel],
    out: &mut (dyn Write + Send),
    log: &mut (dyn Write + Send),
) -> Result<Outcome, String> {
    // The last seq seen per channel: a reconnect resumes after it.
    let mut last: BTreeMap<Channel, Option<u64>> = channels.iter().map(|c| (c.clone(), args.since)).collect();
    // Each channel's log epoch, from its `subscribed`: a reconnect to a
    // store that was wiped since is told so (a reset), not replayed wrongly.
    let mut epochs: BTreeMap<Channel, String> = BTreeMap::new();
    let mut attempt: u32 = 0;
    loop {
        let mut req = args.url.as_str().into_client_request().map_err(|e| format!("--url {:?}: {e}", args.url))?;
        if let Some(o) = &args.origin {
            req.headers_mut().insert("origin", o.parse().map_err(|_| format!("--origin {o:?} is not a header value"))?);
        }
        let mut ws = match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) if res.status().is_client_error() => {
                let body = res.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().to_string();
                return Ok(Outcome::Refused(format!("{} refused the connection: {} {body}", args.url, res.status())));
            }
            Err(e) => {
                let wait = next_wait(&mut attempt);
                let _ = writeln!(log, "hookcast listen: cannot connect to {} ({e}); retrying in {wait:?}", args.url);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let subscribe = |channel: &Channel, since: Option<u64>, epochs: &BTreeMap<Channel, String>| {
            let sub = ClientMsg::Subscribe {
                channel: channel.clone(),
                since,
                batch: true,
                token: args.token.clone(),
                epoch: since.and(epochs.get(channel).cloned()),
            };
            serde_json::to_string(&sub).map(|t| Message::Text(t.into())).map_err(|e| e.to_string())
        };
        for (channel, since) in &last {
            ws.send(subscribe(channel, *since, &epochs)?).await.map_err(|e| e.to_string())?;
        }
        // Events that came ahead of a gap (a replay continued with `next`,
        // or one being repaired), printed once the gap fills.
        let mut held: Held = BTreeMap::new();
        let mut subscribed = 0;
        let mut failures: u32 = 0;
        while let Some(msg) = ws.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t,
                Ok(Message::Close(Some(c))) if u16::from(c.code) == 4403 || u16::from(c.code) == 1008 => {
                    return Ok(Outcome::Refused(format!("the server closed the socket: {} {}", u16::from(c.code), c.reason)));
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            // API Gateway's own frame when an integration fails: no type, so
            // every channel not yet answered is asked again.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) {
                if v.get("type").is_none() && v.get("message").is_some() {
                    let _ = writeln!(log, "hookcast listen: the gateway said {}; asking again", v["message"]);
                    tokio::time::sleep(next_wait(&mut failures)).await;
                    for (channel, since) in &last {
                        ws.send(subscribe(channel, *since, &epochs)?).await.map_err(|e| e.to_string())?;
                    }
                    continue;
                }
            }
            let msg: ServerMsg = serde_json::from_str(text.as_str())
                .map_err(|e| format!("the server sent something that is not a protocol v1 frame: {e}"))?;
            let frames = match msg {
                ServerMsg::Batch { frames } => frames,
                one => vec![one],
            };
            for f in frames {
                match f {
                    ServerMsg::Event(ev) => {
                        let done = take_event(args, ev, &mut last, &mut held, out)?;
                        if done {
                            let _ = ws.close(None).await;
                            return Ok(Outcome::Done);
                        }
                    }
                    ServerMsg::Subscribed { channel, seq: head, reset, epoch, next } => {
                        // From now on: a first subscribe without since starts at
                        // the head, and so does one whose history is gone.
                        if let Some(seen) = last.get_mut(&channel) {
                            if reset {
                                let _ = writeln!(log, "hookcast listen: events on {channel} were missed; following from {head}");
                                *seen = Some(head);
                                held.remove(&channel);
                            }
                            seen.get_or_insert(head);
                        }
                        epochs.insert(channel.clone(), epoch);
                        failures = 0;
                        let since = last.get(&channel).copied().flatten();
                        let gap = held.get(&channel).is_some_and(|h| !h.is_empty());
                        if next.is_some() || gap {
                            // The replay goes on (or a gap is repaired) from what was printed.
                            ws.send(subscribe(&channel, since, &epochs)?).await.map_err(|e| e.to_string())?;
                            continue;
                        }
                        subscribed += 1;
                        if subscribed == last.len() {
                            attempt = 0;
                            let _ = writeln!(log, "hookcast listen: following {}", args.channels.join(", "));
                        }
                    }
                    ServerMsg::State { channel, seq, mode, .. } => {
                        // The channel's state stands for what history no
                        // longer holds: following from its seq.
                        if let Some(seen) = last.get_mut(&channel) {
                            if seen.is_some_and(|s| s < seq) {
                                let _ = writeln!(log, "hookcast listen: {channel} is current from its {mode} state at {seq}");
                            }
                            *seen = Some(seen.map_or(seq, |s| s.max(seq)));
                            if let Some(h) = held.get_mut(&channel) {
                                h.retain(|s, _| *s > seq);
                            }
                        }
                    }
                    ServerMsg::Error { code, message, channel } => {
                        if matches!(code.as_str(), "forbidden" | "invalid_channel" | "too_many_subscriptions" | "bad_message") {
                            return Ok(Outcome::Refused(format!("{code}: {message}")));
                        }
                        let _ = writeln!(log, "hookcast listen: {code}: {message}");
                        // A subscribe that failed for now is asked again, after a backoff.
                        if let Some(channel) = channel.filter(|c| last.contains_key(c)) {
                            tokio::time::sleep(next_wait(&mut failures)).await;
                            let since = last.get(&channel).copied().flatten();
                            ws.send(subscribe(&channel, since, &epochs)?).await.map_err(|e| e.to_string())?;
                        }
                    }
                    _ => {}
                }
            }
        }
        let wait = next_wait(&mut attempt);
        let _ = writeln!(log, "hookcast listen: disconnected; resuming in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// Events that came ahead of a gap, per channel, by seq.
type Held = BTreeMap<Channel, BTreeMap<u64, hookcast_core::Event>>;

/// One event frame: printed in seq order (one past a gap is held until the
/// gap fills, one already printed is skipped); `true` once the `--until`
/// event has been printed (what followed it in the same run is not).
fn take_event(
    args: &ListenArgs,
    ev: hookcast_core::Event,
    last: &mut BTreeMap<Channel, Option<u64>>,
    held: &mut Held,
    out: &mut (dyn Write + Send),
) -> Result<bool, String> {
    let Some(seen) = last.get_mut(&ev.channel) else { return Ok(false) };
    if seen.is_some_and(|s| ev.seq <= s) {
        return Ok(false); // a replay overlapping what was printed
    }
    if seen.is_some_and(|s| ev.seq > s + 1) {
        held.entry(ev.channel.clone()).or_default().insert(ev.seq, ev);
        return Ok(false);
    }
    let channel = ev.channel.clone();
    let mut ready = vec![ev];
    if let Some(h) = held.get_mut(&channel) {
        while let Some(next) = h.remove(&(ready[ready.len() - 1].seq + 1)) {
            ready.push(next);
        }
    }
    for ev in ready {
        *seen = Some(ev.seq);
        let done = args.until.as_deref().is_some_and(|u| matches(u, ev.event.as_str()));
        writeln!(out, "{}", ServerMsg::Event(ev).to_json()).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        if done {
            return Ok(true);
        }
    }
    Ok(false)
}
