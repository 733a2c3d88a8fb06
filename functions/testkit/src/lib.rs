//! What hookcast's tests share across crates: in-memory doubles of the
//! ports and their conformance suites ([`doubles`], [`conformance`]), the
//! bad-input table both hosts run ([`hostile`]), the senders' proof
//! ([`senders`]), and waits that are
//! ceilings (below).
//!
//! # Waits
//!
//! A test waits on the condition itself and gives up only at a ceiling: a
//! bound for a run that is stuck, never a guess at how long the work takes.
//! CI runs on a shared 2-core machine that may be busy with other work, so
//! the ceilings are several times the slowest time seen there. When a wait
//! gives up it says what it was waiting for and what it last saw.
//!
//! Where a timing is the point of a test (a 408 after the body deadline, a
//! close after a silence), the test shortens the server's setting; it never
//! tightens its own wait.

pub mod doubles;
pub mod hostile;
pub mod senders;

pub use doubles::{conformance, Faulty, MemLog, RecordingGateway};

/// The one test configuration of the engine tests: a Netlify source
/// (`netlify`, JWS with [`NETLIFY_SECRET`]) and a GitHub-style HMAC source
/// (`gh`, [`GH_SECRET`], publishing to `news`, deliveries named by
/// `X-GitHub-Delivery`), with `origins` allowed and default limits.
pub fn config(origins: &[&str]) -> hookcast_core::Config {
    use hookcast_core::config::{Limits, Source, SourceKind};
    use hookcast_core::secret::Secret;
    let source = |name: &str, kind, channels: Vec<hookcast_core::channel::ChannelPattern>, delivery_header: Option<&str>| {
        (
            name.to_owned(),
            Source {
                name: name.into(),
                kind,
                channels,
                delivery_header: delivery_header.map(str::to_owned),
                fields: None,
                route: None,
                events: None,
            },
        )
    };
    let sources = [
        source(
            "netlify",
            SourceKind::Netlify {
                secret: Secret::new(NETLIFY_SECRET),
                forms: Default::default(),
                form_channels: Default::default(),
            },
            vec![],
            None,
        ),
        source(
            "gh",
            SourceKind::Hmac { secret: Secret::new(GH_SECRET), scheme: hookcast_core::config::HmacScheme::github() },
            vec!["news".parse().unwrap()],
            Some("x-github-delivery"),
        ),
    ];
    hookcast_core::Config {
        allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
        limits: Limits::default(),
        sources: sources.into_iter().collect(),
        private: None,
        state: Default::default(),
    }
}

/// [`config`]'s Netlify JWS secret.
pub const NETLIFY_SECRET: &str = "netlify-jws-secret";
/// [`config`]'s GitHub HMAC secret.
pub const GH_SECRET: &str = "github-hmac-secret-123";

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// The ceiling for work on this machine alone (the local binary, sockets on
/// loopback). The slowest such wait seen on a loaded 2-core machine was a
/// few seconds.
pub const LOCAL: Duration = Duration::from_secs(60);

/// The ceiling for anything that goes through moto, which serialises every
/// request and is shared by the tests running at once.
pub const MOTO: Duration = Duration::from_secs(180);

/// Awaits `fut`, giving up after `ceiling` with a message naming `what`.
pub async fn within<F: Future>(ceiling: Duration, what: impl Display, fut: F) -> F::Output {
    let start = tokio::time::Instant::now();
    match tokio::time::timeout(ceiling, fut).await {
        Ok(v) => {
            slow(start.elapsed(), ceiling, &what);
            v
        }
        Err(_) => panic!("gave up after {ceiling:?} waiting for {what}"),
    }
}

/// Says on stderr (shown with a failure, or with `--nocapture`) when a wait
/// used over a quarter of its ceiling: the figures a ceiling is set from.
pub fn slow(took: Duration, ceiling: Duration, what: &impl Display) {
    if took > ceiling / 4 {
        eprintln!("slow wait: {what} took {took:.1?} of its {ceiling:?} ceiling");
    }
}

/// Polls `probe` until it returns `Ok`, giving up after `ceiling`. `Err`
/// carries what the probe saw, and the last one is in the message.
pub async fn until<T, F, Fut>(ceiling: Duration, what: impl Display, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let saw = match probe().await {
            Ok(v) => {
                slow(start.elapsed(), ceiling, &what);
                return v;
            }
            Err(saw) => saw,
        };
        if start.elapsed() >= ceiling {
            panic!("gave up after {ceiling:?} waiting for {what}; last saw: {saw}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// `until` for a probe that needs no await.
pub async fn until_sync<T>(ceiling: Duration, what: impl Display, mut probe: impl FnMut() -> Result<T, String>) -> T {
    until(ceiling, what, || std::future::ready(probe())).await
}

/// A shell loop that keeps one core busy while it lives, as CI's machine
/// often is when the tests run: a test that holds only on a quiet machine
/// fails with it. Stopped (killed and reaped) when dropped.
pub struct BusyCore(std::process::Child);

impl BusyCore {
    pub fn start() -> Self {
        let child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("sh, to keep a core busy");
        Self(child)
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next text frame of a WebSocket, as JSON, within `ceiling` (other
/// frames skipped); a close, an error or the end of the stream fails the test.
pub async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, ceiling: Duration, what: &str) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match within(ceiling, what, ws.next()).await.expect("the socket ended").expect("a frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("a JSON frame"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn until_returns_once_the_probe_holds() {
        let mut n = 0;
        let got = until_sync(LOCAL, "three polls", || {
            n += 1;
            if n == 3 {
                Ok(n)
            } else {
                Err(format!("n = {n}"))
            }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "gave up after 50ms waiting for nothing; last saw: still nothing")]
    async fn until_says_what_it_waited_for_and_saw() {
        until_sync(Duration::from_millis(50), "nothing", || Err::<(), _>("still nothing".into())).await;
    }

    #[tokio::test]
    #[should_panic(expected = "gave up after 20ms waiting for a future that never ends")]
    async fn within_names_what_it_waited_for() {
        within(Duration::from_millis(20), "a future that never ends", std::future::pending::<()>()).await;
    }
}
