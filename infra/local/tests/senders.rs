//! Every sender kind, natively, on the local binary: each real body from
//! `tests/fixtures/senders`, signed as its sender signs it by an independent
//! implementation (`hookcast_testkit::senders`: Python's hmac with Python's
//! clock, and the senders' own SDKs; never hookcast's signer), reaches a subscribed WebSocket with the
//! configured channel, event name and data; the same body signed with
//! another secret is refused and reaches no page.

use std::path::Path;
use std::time::Duration;

use futures::SinkExt;
use hookcast::settings::{self, Overrides};
use hookcast_testkit::senders::{cases, config_toml, fixture, sdk_sign, sign, Case, CONTENTFUL_SECRET};
use serde_json::{json, Value};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{next, Ws, WAIT};

async fn post(url: &str, content_type: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, Value) {
    let (status, answer, _) = common::post(url, content_type, headers, body).await;
    (status, answer)
}

/// The binary on port 0 with [`config`], and a page subscribed to `channels`.
async fn start(dir: &Path, channels: &[&str]) -> (hookcast::Running, Ws) {
    let path = dir.join("hookcast.toml");
    std::fs::write(&path, config_toml()).unwrap();
    let cli = Overrides { port: Some(0), data_dir: Some(dir.join("data")), ..Default::default() };
    let running = hookcast::spawn(&settings::load_file(&path, &cli).unwrap(), false).await.unwrap();
    let mut page = common::ws_connect(running.addr).await;
    for ch in channels {
        page.send(Message::Text(json!({"action": "subscribe", "channel": ch}).to_string().into())).await.unwrap();
        assert_eq!(next(&mut page).await["type"], "subscribed", "{ch}");
    }
    (running, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sender_s_real_body_signed_independently_reaches_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let mut channels: Vec<&str> = cases.iter().map(|c| c.channel).collect();
    channels.push("news/today");
    channels.dedup();
    let (running, mut page) = start(dir.path(), &channels).await;
    let url = |p: &str| format!("http://{}{p}", running.addr);

    for case in &cases {
        let what = format!("{} ({})", case.source, case.fixture);
        let body = std::fs::read(fixture(case.fixture)).unwrap();
        // A forgery first: the same body signed with another secret (or the
        // wrong token). Were it published, it would be the page's next frame.
        let wrong = if case.scheme == "svix" || case.scheme == "webhook" {
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        } else {
            "not-the-secret-0123456789-not-the-secret-0123456789-not-the-secret"
        };
        let forged = sign(case.scheme, wrong, &fixture(case.fixture), &case.extra);
        let (status, answer) = post(&url(&format!("/hooks/{}", case.source)), case.content_type, &forged, body.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_signature")), "{what} forged: {answer}");

        let headers = sign(case.scheme, case.secret, &fixture(case.fixture), &case.extra);
        let (status, answer) = post(&url(&format!("/hooks/{}", case.source)), case.content_type, &headers, body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        assert_eq!((answer["channel"].as_str(), answer["event"].as_str()), (Some(case.channel), Some(case.event)), "{what}");
        let ev = next(&mut page).await;
        assert_eq!(
            (ev["type"].as_str(), ev["channel"].as_str(), ev["event"].as_str()),
            (Some("event"), Some(case.channel), Some(case.event)),
            "{what}: {ev}"
        );
        assert_eq!(ev["data"], case.data, "{what}");
    }

    // The github source takes only release.* events: a real push and
    // GitHub's ping are verified (a forgery is still 401), answered 200
    // ignored, and publish nothing: the page's next frame is Zapier's below.
    for (file, extra) in hookcast_testkit::senders::ignored_by_github() {
        let body = std::fs::read(fixture(file)).unwrap();
        let forged = sign("github", "not-the-secret-0123456789", &fixture(file), &extra);
        let (status, _) = post(&url("/hooks/github"), "application/json", &forged, body.clone()).await;
        assert_eq!(status, 401, "{file} forged");
        let headers = sign("github", "github-e2e-secret-0123456789", &fixture(file), &extra);
        let (status, answer) = post(&url("/hooks/github"), "application/json", &headers, body).await;
        assert_eq!((status, answer["ignored"].as_bool()), (200, Some(true)), "{file}: {answer}");
    }
    // GitHub's ping is no event even where every event is taken (gh-deploys lists none).
    let (file, extra) = &hookcast_testkit::senders::ignored_by_github()[1];
    let headers = sign("github", "github-e2e-secret-0123456789", &fixture(file), extra);
    let (status, answer) =
        post(&url("/hooks/gh-deploys"), "application/json", &headers, std::fs::read(fixture(file)).unwrap()).await;
    assert_eq!((status, answer["ignored"].as_bool()), (200, Some(true)), "a ping to gh-deploys: {answer}");
    let res = reqwest::get(url("/channels/releases/events?since=0")).await.unwrap();
    let history: Value = res.json().await.unwrap();
    assert_eq!(history["events"].as_array().map(Vec::len), Some(1), "only the release is stored: {history}");

    // Zapier's form body, with its token header.
    let form = std::fs::read(fixture("zapier/post-form.txt")).unwrap();
    let token = vec![("x-hookcast-token".to_owned(), "zapier-e2e-token-0123456789".to_owned())];
    let (status, answer) = post(&url("/hooks/zapier"), "application/x-www-form-urlencoded", &token, form).await;
    assert_eq!(status, 200, "{answer}");
    let ev = next(&mut page).await;
    assert_eq!((ev["channel"].as_str(), ev["event"].as_str()), (Some("news/today"), Some("post.published")));
    assert_eq!(ev["data"], json!({"title": "Hookcast 1.0 is out", "url": "https://example.com/blog/hookcast-1-0"}));

    // The sender's delivery identity dedupes a redelivery, signed anew:
    // GitHub's X-GitHub-Delivery, Stripe's event id in the body.
    for (source, scheme, secret, file, extra) in [
        (
            "github",
            "github",
            "github-e2e-secret-0123456789",
            "github/release-published.json",
            vec![("X-GitHub-Event", "release"), ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")],
        ),
        ("stripe", "stripe", "whsec_stripe-e2e-secret-0123456789", "stripe/event.json", vec![]),
    ] {
        let headers = sign(scheme, secret, &fixture(file), &extra);
        let (status, answer) =
            post(&url(&format!("/hooks/{source}")), "application/json", &headers, std::fs::read(fixture(file)).unwrap()).await;
        assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(true)), "{source}: {answer}");
    }
    // A captured delivery posted again with a new delivery id (and even
    // another event type) in the headers their signatures do not cover:
    // the same signed body, so the same delivery.
    for (source, scheme, secret, file, signed_with, replayed_with) in [
        (
            "github",
            "github",
            "github-e2e-secret-0123456789",
            "github/release-published.json",
            vec![("X-GitHub-Event", "release"), ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")],
            vec![("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "00000000-0000-0000-0000-000000000000")],
        ),
        (
            "shopify",
            "shopify",
            "shopify-e2e-secret-0123456789",
            "shopify/orders-create.json",
            vec![("X-Shopify-Topic", "orders/create"), ("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")],
            vec![("X-Shopify-Topic", "orders/create"), ("X-Shopify-Webhook-Id", "another-webhook-id")],
        ),
    ] {
        let captured = sign(scheme, secret, &fixture(file), &signed_with);
        let replay: Vec<(String, String)> = captured
            .into_iter()
            .filter(|(k, _)| !replayed_with.iter().any(|(r, _)| r.eq_ignore_ascii_case(k)))
            .chain(replayed_with.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let (status, answer) =
            post(&url(&format!("/hooks/{source}")), "application/json", &replay, std::fs::read(fixture(file)).unwrap()).await;
        // The github source takes only release.*: the replay posing as a
        // push is ignored before it could be a duplicate. Either way nothing
        // is published (the pong below is the page's next frame).
        let not_published =
            answer["duplicate"].as_bool() == Some(true) || (source == "github" && answer["ignored"].as_bool() == Some(true));
        assert!(status == 200 && not_published, "{source} replayed: {status} {answer}");
    }
    page.send(Message::Text(json!({"action": "ping"}).to_string().into())).await.unwrap();
    assert_eq!(next(&mut page).await, json!({"type": "pong"}), "no forgery, redelivery or replay reached the page");
    hookcast_testkit::within(WAIT, "shutdown", running.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_own_sdks_sign_what_hookcast_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let sdk_cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| ["github", "gh-deploys", "stripe", "clerk", "sanity", "contentful"].contains(&c.source))
        .collect();
    assert_eq!(sdk_cases.len(), 6);
    let channels: Vec<&str> = sdk_cases.iter().map(|c| c.channel).collect();
    let (running, mut page) = start(dir.path(), &channels).await;
    let url = |p: &str| format!("http://{}{p}", running.addr);
    for case in &sdk_cases {
        let what = format!("{} signed by its SDK", case.source);
        let body = std::fs::read(fixture(case.fixture)).unwrap();
        let wrong = if case.scheme == "svix" { "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" } else { &"w".repeat(64) };
        let forged = sdk_sign(case.scheme, wrong, &fixture(case.fixture), &case.extra);
        let (status, answer) = post(&url(&format!("/hooks/{}", case.source)), case.content_type, &forged, body.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_signature")), "{what}, forged: {answer}");

        let headers = sdk_sign(case.scheme, case.secret, &fixture(case.fixture), &case.extra);
        let (status, answer) = post(&url(&format!("/hooks/{}", case.source)), case.content_type, &headers, body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        let ev = next(&mut page).await;
        assert_eq!((ev["channel"].as_str(), ev["event"].as_str()), (Some(case.channel), Some(case.event)), "{what}: {ev}");
        assert_eq!(ev["data"], case.data, "{what}");
    }
    hookcast_testkit::within(WAIT, "shutdown", running.stop()).await.unwrap();
}

/// `hookcast send --kind <sender>`, the real binary: a sample of each
/// sender's body, or a real one with `--body`, signed as that sender signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookcast_send_signs_like_each_sender() {
    let dir = tempfile::tempdir().unwrap();
    let runs: &[(&str, &str, &[&str], &str, &str)] = &[
        ("github", "github-e2e-secret-0123456789", &[], "releases", "release.published"),
        ("vercel", "AiK52QASLJXmCXX3X9gO2Zyh", &["--event", "deployment.succeeded"], "vercel", "deployment.succeeded"),
        ("stripe", "whsec_stripe-e2e-secret-0123456789", &[], "billing/checkout.session", "checkout.session.completed"),
        ("shopify", "shopify-e2e-secret-0123456789", &["--event", "orders/paid"], "orders", "orders.paid"),
        ("sanity", "sanity-e2e-secret-0123456789", &["--event", "create"], "content/post", "document.create"),
        ("contentful", CONTENTFUL_SECRET, &[], "cms/blogpost", "ContentManagement.Entry.publish"),
        ("clerk", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &[], "users", "user.created"),
        ("strapi", "strapi-e2e-token-0123456789", &[], "strapi/post", "entry.publish"),
    ];
    let mut channels: Vec<&str> = runs.iter().map(|r| r.3).collect();
    channels.extend(["billing/plan", "custom"]);
    let (running, mut page) = start(dir.path(), &channels).await;
    let kind_of = |source: &str| match source {
        "clerk" => "svix".to_owned(),
        "custom" => "hmac".to_owned(),
        other => other.to_owned(),
    };
    let send = |source: &str, secret: &str, extra: &[&str]| {
        let url = format!("http://{}/hooks/{source}", running.addr);
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"));
        cmd.args(["send", "--url", &url, "--kind", &kind_of(source), "--secret", secret]).args(extra);
        cmd.output()
    };
    for (source, secret, extra, channel, event) in runs {
        let out = send(source, secret, extra).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.starts_with("200 "), "{source}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let ev = next(&mut page).await;
        assert_eq!((ev["channel"].as_str(), ev["event"].as_str()), (Some(*channel), Some(*event)), "{source}: {ev}");
    }
    // A real body from a file, sent as is.
    let body = fixture("stripe/event.json");
    let out = send("stripe", "whsec_stripe-e2e-secret-0123456789", &["--body", body.to_str().unwrap()]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 "), "{}", String::from_utf8_lossy(&out.stdout));
    let ev = next(&mut page).await;
    assert_eq!((ev["channel"].as_str(), ev["event"].as_str()), (Some("billing/plan"), Some("plan.created")));
    // The general hmac, as the custom source reads it: base64 HMAC-SHA1 after "v1=" over "<time>.<body>".
    let out = send(
        "custom",
        "custom-e2e-secret-0123456789",
        &[
            "--body",
            body.to_str().unwrap(),
            "--signature-header",
            "x-signature",
            "--prefix",
            "v1=",
            "--encoding",
            "base64",
            "--algorithm",
            "sha1",
            "--timestamp-header",
            "x-timestamp",
        ],
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 "), "{}", String::from_utf8_lossy(&out.stdout));
    let ev = next(&mut page).await;
    assert_eq!((ev["channel"].as_str(), ev["event"].as_str()), (Some("custom"), Some("plan.created")));
    // The wrong secret: refused, and the command says so.
    let out = send("stripe", "whsec_not-the-stripe-secret-01234", &[]).await.unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("401 "));
    hookcast_testkit::within(WAIT, "shutdown", running.stop()).await.unwrap();
}

/// `hookcast dev` has a source of every kind: each sender kind, tried with
/// `hookcast send --kind <kind>` and the dev secret it shares, reaches the
/// channel of its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookcast_dev_has_every_sender_kind_to_try() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = settings::DevSecrets {
        netlify: "netlify-dev-secret-0123".into(),
        zapier: "zapier-dev-token-0123".into(),
        hmac: "hmac-dev-secret-0123456".into(),
        standard: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
    };
    let cli = Overrides { port: Some(0), data_dir: Some(dir.path().join("data")), ..Default::default() };
    let running = hookcast::spawn(&settings::dev_settings(&secrets, &cli).unwrap(), false).await.unwrap();
    let kinds = ["github", "vercel", "stripe", "shopify", "sanity", "contentful", "svix", "strapi"];
    let mut page = common::ws_connect(running.addr).await;
    for ch in kinds {
        page.send(Message::Text(json!({"action": "subscribe", "channel": ch}).to_string().into())).await.unwrap();
        assert_eq!(next(&mut page).await["type"], "subscribed", "{ch}");
    }
    for kind in kinds {
        let secret = match kind {
            "svix" => secrets.standard.clone(),
            "strapi" => secrets.zapier.clone(),
            // Stripe's secrets start with whsec_ (refused otherwise).
            "stripe" => format!("whsec_{}", secrets.hmac),
            _ => secrets.hmac.clone(),
        };
        let url = format!("http://{}/hooks/{kind}", running.addr);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
            .args(["send", "--url", &url, "--kind", kind, "--secret", &secret])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.starts_with("200 "), "{kind}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(next(&mut page).await["channel"], kind);
    }
    hookcast_testkit::within(WAIT, "shutdown", running.stop()).await.unwrap();
}

/// One `hookcast.toml` for both hosts, as a user keeps it: every sender
/// kind, each secret named by `secret_env` (none written in it), a private
/// channel, state rules, an event filter and a channel per event pattern. The same file is checked for both hosts
/// (`hookcast check`, `hookcast check --aws`), run by `hookcast serve`, and
/// run by the AWS stack as AWS runs it: `hookcast emulate` on `sam build`'s
/// output (the real bootstraps), the file as the stack's config layer, its
/// secrets put into the stack's SenderSecrets secret as `hookcast secrets`
/// prints them, and the origins from the file (the AllowedOrigins parameter
/// left empty). On each host every real body, signed by the independent
/// signer, reaches a page with the configured channel, event and data (the
/// private one with a token from `hookcast token`), and a forgery is
/// refused. Run by tests/run after sam build (`--ignored`, with
/// HOOKCAST_BUILD_DIR and moto's HOOKCAST_DYNAMODB_ENDPOINT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sam build's output; tests/run runs it in its AWS phase with HOOKCAST_BUILD_DIR"]
async fn one_hookcast_toml_on_both_hosts() {
    let build = std::env::var("HOOKCAST_BUILD_DIR").expect("HOOKCAST_BUILD_DIR: the sam build output to run");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookcast.toml");
    std::fs::write(&file, hookcast_testkit::senders::one_file()).unwrap();
    let config = file.to_str().unwrap();
    let vars = hookcast_testkit::senders::secret_env_vars();
    let hookcast = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"));
        cmd.args(args).envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))).env("RUST_LOG", "warn");
        cmd
    };
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
            .args(args)
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "hookcast {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    // Ready for both hosts: all 14 sources (every kind), the private channel, the state rules.
    assert!(run(&["check", "--config", config]).contains("ready for hookcast serve: 14 sources"));
    let aws = run(&["check", "--aws", "--config", config]);
    assert!(
        aws.contains("ready for the AWS stack: 14 sources") && aws.contains("1 private channel pattern, 2 state rules"),
        "{aws}"
    );
    let secrets = run(&["secrets", "--config", config]);
    let parsed: Value = serde_json::from_str(secrets.trim()).unwrap();
    assert_eq!(parsed.as_object().map(|o| o.len()), Some(14), "a secret per source");
    let secrets_file = dir.path().join("secrets.json");
    std::fs::write(&secrets_file, secrets.trim()).unwrap();
    let token = run(&["token", "--channel", hookcast_testkit::senders::PRIVATE_CHANNEL, "--config", config]).trim().to_owned();

    // The local binary.
    let mut serve = hookcast(&["serve", "--config", config, "--port", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (http, _lines) = common::banner(&mut serve, "hookcast serve's banner").await;
    let ws = format!("{}/ws", http.replacen("http://", "ws://", 1));
    every_case_reaches_a_page(&http, &ws, &token, "hookcast serve").await;
    serve.kill().await.unwrap();

    // The AWS stack, from the same file: first as just deployed, before its
    // SenderSecrets is filled (it starts; each source's delivery is refused
    // saying where its secret goes; the snippet is served), then with the
    // secrets JSON put in.
    let aws_endpoint =
        std::env::var("HOOKCAST_DYNAMODB_ENDPOINT").expect("HOOKCAST_DYNAMODB_ENDPOINT: moto's server (tests/run starts it)");
    let emulate = |put: Option<&Path>, ready: &Path| {
        let mut cmd =
            hookcast(&["emulate", "--template", "template.yaml", "--build-dir", &build, "--aws-endpoint", &aws_endpoint]);
        cmd.current_dir(&root).arg("--ready-file").arg(ready).args(["--config", config]);
        if let Some(file) = put {
            cmd.arg("--put-secret").arg(format!("SenderSecrets={}", file.display()));
        }
        cmd.arg("--parameter-overrides")
            .args([format!("SubscribeSecret={}", hookcast_testkit::senders::SUBSCRIBE_SECRET), "AlertEmail=none".to_owned()]);
        cmd
    };
    let fresh = Stack::start(emulate(None, &dir.path().join("fresh.json")), &dir.path().join("fresh.json")).await;
    let res = reqwest::Client::new().post(format!("{}/hooks/github", fresh.http)).body("{}").send().await.unwrap();
    assert_eq!(
        (res.status().as_u16(), res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned())),
        (503, Some("60".into()))
    );
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["error"], "source_not_ready", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("put it under \"github\" in the SenderSecrets secret"), "{answer}");
    assert_eq!(
        reqwest::get(format!("{}/hookcast.js", fresh.http)).await.unwrap().status(),
        200,
        "the snippet is served meanwhile"
    );
    fresh.stop().await;

    let ready = dir.path().join("ready.json");
    let stack = Stack::start(emulate(Some(&secrets_file), &ready), &ready).await;
    every_case_reaches_a_page(&stack.http, &stack.ws, &token, "the AWS stack").await;
    stack.stop().await;
}

/// `hookcast emulate`, started and ready (its ready file's URLs), its log kept.
struct Stack {
    child: tokio::process::Child,
    log: tokio::task::JoinHandle<String>,
    http: String,
    ws: String,
}

impl Stack {
    async fn start(mut cmd: tokio::process::Command, ready: &Path) -> Stack {
        let mut child =
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).kill_on_drop(true).spawn().unwrap();
        let mut log = child.stderr.take().unwrap();
        let log = tokio::spawn(async move {
            let mut s = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut log, &mut s).await;
            s
        });
        // A ceiling for a stuck start (six bootstraps and moto on a busy machine).
        let started = tokio::time::Instant::now();
        let urls: Value = loop {
            if let Some(v) = std::fs::read(ready).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                break v;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("emulate exited {status} before it was ready:\n{}", log.await.unwrap());
            }
            assert!(
                started.elapsed() < hookcast_testkit::MOTO,
                "the emulated stack was not ready within {:?}",
                hookcast_testkit::MOTO
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (http, ws) = (urls["http"].as_str().unwrap().to_owned(), urls["websocket"].as_str().unwrap().to_owned());
        Stack { child, log, http, ws }
    }

    /// SIGTERM: emulate stops its bootstraps and moto before it exits.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let status = hookcast_testkit::within(hookcast_testkit::LOCAL, "emulate to stop", self.child.wait()).await.unwrap();
        let log = self.log.await.unwrap();
        assert!(status.success() || status.code().is_none(), "emulate stopped with {status}:\n{log}");
    }
}

/// Every case on one host: a page subscribed to every channel (the private
/// one with `token`), each forgery refused, each real delivery on the page
/// with its channel, event and data; the github source's filter holds.
async fn every_case_reaches_a_page(http: &str, ws: &str, token: &str, host: &str) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let cases = cases();
    let mut req = ws.into_client_request().unwrap();
    req.headers_mut().insert("origin", "http://127.0.0.1".parse().unwrap());
    let mut page = connect_async(req).await.unwrap().0;
    let mut channels: Vec<&str> = cases.iter().map(|c| c.channel).collect();
    channels.sort();
    channels.dedup();
    for ch in &channels {
        let mut sub = json!({"action": "subscribe", "channel": ch});
        if *ch == hookcast_testkit::senders::PRIVATE_CHANNEL {
            // Refused without its token, then taken with it.
            page.send(Message::Text(sub.to_string().into())).await.unwrap();
            let reply = next(&mut page).await;
            assert_eq!(
                (reply["type"].as_str(), reply["code"].as_str()),
                (Some("error"), Some("forbidden")),
                "{host}, {ch}: {reply}"
            );
            sub["token"] = json!(token);
        }
        page.send(Message::Text(sub.to_string().into())).await.unwrap();
        let reply = next(&mut page).await;
        assert_eq!(reply["type"], "subscribed", "{host}, {ch}: {reply}");
    }
    for case in &cases {
        let what = format!("{} ({}) on {host}", case.source, case.fixture);
        let body = std::fs::read(fixture(case.fixture)).unwrap();
        let url = format!("{http}/hooks/{}", case.source);
        let wrong = if matches!(case.scheme, "svix" | "webhook") {
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        } else {
            "not-the-secret-0123456789-not-the-secret-0123456789-not-the-secret"
        };
        let forged = sign(case.scheme, wrong, &fixture(case.fixture), &case.extra);
        let (status, answer) = post(&url, case.content_type, &forged, body.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_signature")), "{what}, forged: {answer}");
        let headers = sign(case.scheme, case.secret, &fixture(case.fixture), &case.extra);
        let (status, answer) = post(&url, case.content_type, &headers, body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        // On AWS the fan-out is asynchronous (stream, queue, workers); the ceiling is moto's.
        let ev = hookcast_testkit::within(hookcast_testkit::MOTO, &what, next(&mut page)).await;
        assert_eq!(
            (ev["type"].as_str(), ev["channel"].as_str(), ev["event"].as_str()),
            (Some("event"), Some(case.channel), Some(case.event)),
            "{what}: {ev}"
        );
        assert_eq!(ev["data"], case.data, "{what}");
    }
    // events = ["release.*"]: a push and a ping are answered 200 ignored,
    // and the channel holds the release alone.
    for (file, extra) in hookcast_testkit::senders::ignored_by_github() {
        let headers = sign("github", "github-e2e-secret-0123456789", &fixture(file), &extra);
        let (status, answer) =
            post(&format!("{http}/hooks/github"), "application/json", &headers, std::fs::read(fixture(file)).unwrap()).await;
        assert_eq!((status, answer["ignored"].as_bool()), (200, Some(true)), "{file} on {host}: {answer}");
    }
    let history: Value = reqwest::get(format!("{http}/channels/releases/events?since=0")).await.unwrap().json().await.unwrap();
    assert_eq!(history["events"].as_array().map(Vec::len), Some(1), "only the release is stored on {host}: {history}");
    assert_eq!(history["mode"], "last", "[state] from the file on {host}: {history}");
    eprintln!("{host}: every case delivered");
}
