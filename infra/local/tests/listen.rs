//! `hookcast listen`, the real binary against a real server: it waits for
//! the awaited event and exits 0, prints events as JSON lines, exits 1 on
//! timeout and 2 on a refusal, each with a clear message.

use std::process::Stdio;

use hookcast::settings::{self, DevSecrets, Overrides};
use hookcast_core::sign;
use serde_json::Value;
use tokio::io::AsyncReadExt;

mod common;

fn secrets() -> DevSecrets {
    common::dev_secrets("listen-netlify-secret-0123", "listen-zapier-token-0123", "listen-hmac-secret-0123")
}

async fn deploy(http: &str, state: &str, context: &str) {
    let mut v: Value = serde_json::from_str(include_str!("../../../tests/fixtures/netlify/deploy.json")).unwrap();
    v["state"] = state.into();
    v["context"] = context.into();
    v["id"] = format!("{state}-{context}").into();
    let body = v.to_string();
    let res = reqwest::Client::new()
        .post(format!("{http}/hooks/netlify"))
        .header("content-type", "application/json")
        .header("x-webhook-signature", sign::netlify(secrets().netlify.as_bytes(), body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

fn listen(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .arg("listen")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn finish(mut child: tokio::process::Child) -> (i32, String, String) {
    let status = hookcast_testkit::within(hookcast_testkit::LOCAL, "hookcast listen to exit", child.wait()).await.unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).await.unwrap();
    }
    (status.code().unwrap_or(-1), out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_waits_for_the_event_then_exits_0_and_explains_timeouts_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Overrides { port: Some(0), data_dir: Some(dir.path().to_owned()), ..Default::default() };
    let running = hookcast::spawn(&settings::dev_settings(&secrets(), &cli).unwrap(), false).await.unwrap();
    let addr = running.addr;
    let (http, ws) = (format!("http://{addr}"), format!("ws://{addr}/ws"));

    // A deploy that already happened is before "now": replayed only with --since.
    deploy(&http, "building", "production").await;
    // Its own timeout is a ceiling too: the wait ends when the deploy arrives.
    let mut waiting = listen(&["--url", &ws, "--channel", "deploys", "--until", "deploy.succeeded", "--timeout", "50s"]);
    // Deploy once it follows the channel (it says so on stderr).
    let mut said = tokio::io::BufReader::new(waiting.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("following deploys") {
        line.clear();
        let reading = tokio::io::AsyncBufReadExt::read_line(&mut said, &mut line);
        let n = hookcast_testkit::within(hookcast_testkit::LOCAL, "listen to say it follows deploys", reading).await.unwrap();
        assert!(n > 0, "listen ended before following");
    }
    deploy(&http, "ready", "deploy-preview").await; // another channel: not awaited
    deploy(&http, "ready", "production").await;
    let (code, out, err) = finish(waiting).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(
        (lines[0]["channel"].as_str(), lines[0]["event"].as_str(), lines[0]["seq"].as_u64()),
        (Some("deploys"), Some("deploy.succeeded"), Some(2))
    );

    // --since replays: both deploys, in order, as JSON lines.
    let (code, out, _) =
        finish(listen(&["--url", &ws, "--channel", "deploys", "--since", "0", "--until", "deploy.succeeded"])).await;
    assert_eq!(code, 0);
    let seqs: Vec<u64> = out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);

    // Timeout: exit 1 and say what was awaited.
    let (code, _, err) =
        finish(listen(&["--url", &ws, "--channel", "deploys", "--until", "deploy.failed", "--timeout", "1s"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("timed out after 1s waiting for deploy.failed on deploys"), "{err}");
    // A bad channel: exit 2 with the server's reason; nothing to connect to: keeps trying until its timeout.
    let (code, _, err) = finish(listen(&["--url", &ws, "--channel", "no good", "--timeout", "50s"])).await;
    assert_eq!(code, 2);
    assert!(err.contains("--channel \"no good\""), "{err}");
    hookcast_testkit::within(hookcast_testkit::LOCAL, "the server to stop", running.stop()).await.unwrap();
    let (code, _, err) =
        finish(listen(&["--url", &ws, "--channel", "deploys", "--until", "deploy.succeeded", "--timeout", "1s"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect") && err.contains("timed out"), "{err}");
}
