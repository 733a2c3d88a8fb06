//! Property-based fuzzing (proptest, stable Rust) of what faces the internet:
//! signature verification, normalisation, form and number handling, client
//! frames and subscribe tokens. No input may panic; what is accepted must be
//! exactly what was sent; what is signed right must verify.
//!
//! CI runs 256 cases per property (proptest's default). A long run:
//! `PROPTEST_CASES=200000 cargo test -p hookcast-core --test fuzz --release`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookcast_core::config::{Route, Source, SourceKind};
use hookcast_core::mapping::Template;
use hookcast_core::normalize::{check_numbers, normalise};
use hookcast_core::secret::Secret;
use hookcast_core::token::{check, mint, Claims};
use hookcast_core::verify::{verify, HookRequest, Verified};
use hookcast_core::{sign, Channel, ClientMsg, HookError};
use proptest::prelude::*;
use serde_json::{json, Value};

const KEY: &[u8] = b"fuzz-secret-0123456789abcdef";

fn sources() -> Vec<Source> {
    let std_key = hookcast_core::config::decode_standard_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let mut forms = BTreeMap::new();
    forms.insert("guestbook".to_string(), vec!["name".to_string()]);
    let native = |name: &str, kind: SourceKind, delivery: Option<&str>| Source {
        name: name.into(),
        kind,
        channels: vec![],
        delivery_header: delivery.map(str::to_owned),
        fields: None,
        route: Some(Route { channel: Template::parse("x/{a.b}").unwrap(), event: None, by_event: vec![] }),
        events: None,
    };
    let tol = Duration::from_secs(300);
    vec![
        Source {
            name: "netlify".into(),
            kind: SourceKind::Netlify { secret: Secret::new(KEY), forms, form_channels: BTreeMap::new() },
            channels: vec![],
            delivery_header: None,
            fields: None,
            route: None,
            events: None,
        },
        Source {
            name: "gh".into(),
            kind: SourceKind::Hmac { secret: Secret::new(KEY), scheme: hookcast_core::config::HmacScheme::github() },
            channels: vec!["*".parse().unwrap()],
            delivery_header: Some("x-github-delivery".into()),
            fields: None,
            route: None,
            events: None,
        },
        Source {
            name: "std".into(),
            kind: SourceKind::Standard { secret: std_key.clone(), tolerance: Duration::from_secs(300) },
            channels: vec!["*".parse().unwrap()],
            delivery_header: None,
            fields: None,
            route: None,
            events: None,
        },
        Source {
            name: "zap".into(),
            kind: SourceKind::Token { header: "x-hookcast-token".into(), secret: Secret::new(KEY) },
            channels: vec!["zaps/*".parse().unwrap()],
            delivery_header: None,
            fields: Some(vec!["title".into()]),
            route: None,
            events: None,
        },
        native("github", SourceKind::Github { secret: Secret::new(KEY) }, Some("x-github-delivery")),
        native("vercel", SourceKind::Vercel { secret: Secret::new(KEY) }, None),
        native("stripe", SourceKind::Stripe { secret: Secret::new(KEY), tolerance: tol }, None),
        native("shopify", SourceKind::Shopify { secret: Secret::new(KEY) }, Some("x-shopify-webhook-id")),
        native("sanity", SourceKind::Sanity { secret: Secret::new(KEY), tolerance: tol }, Some("idempotency-key")),
        native(
            "contentful",
            SourceKind::Contentful {
                secret: Secret::new(KEY),
                tolerance: Duration::from_secs(30),
                path: "/hooks/contentful".into(),
            },
            None,
        ),
        native("svix", SourceKind::Svix { secret: std_key.clone(), tolerance: tol }, None),
        native("strapi", SourceKind::Strapi { header: "authorization".into(), secret: Secret::new(KEY) }, None),
    ]
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-webhook-signature".to_string()),
        Just("x-hub-signature-256".to_string()),
        Just("webhook-id".to_string()),
        Just("webhook-timestamp".to_string()),
        Just("webhook-signature".to_string()),
        Just("x-hookcast-token".to_string()),
        Just("x-github-delivery".to_string()),
        Just("x-github-event".to_string()),
        Just("x-vercel-signature".to_string()),
        Just("stripe-signature".to_string()),
        Just("x-shopify-hmac-sha256".to_string()),
        Just("x-shopify-topic".to_string()),
        Just("sanity-webhook-signature".to_string()),
        Just("x-contentful-signature".to_string()),
        Just("x-contentful-signed-headers".to_string()),
        Just("x-contentful-timestamp".to_string()),
        Just("x-contentful-topic".to_string()),
        Just("svix-id".to_string()),
        Just("svix-timestamp".to_string()),
        Just("svix-signature".to_string()),
        Just("authorization".to_string()),
        "[a-z-]{1,20}",
    ]
}

/// A JSON value of bounded depth, numbers included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn form_encode(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

proptest! {
    /// Arbitrary headers and bytes: verification and normalisation answer, never panic.
    #[test]
    fn any_request_gets_an_answer(
        headers in prop::collection::vec((header_name(), ".{0,80}"), 0..6),
        body in prop::collection::vec(any::<u8>(), 0..400),
        content_type in prop::option::of(prop_oneof![
            Just("application/json".to_string()),
            Just("application/x-www-form-urlencoded".to_string()),
            ".{0,30}",
        ]),
    ) {
        for src in sources() {
            let req = HookRequest { headers: &headers, body: &body };
            let _ = verify(&src, &req, now());
            let _ = normalise(&src, content_type.as_deref(), &body, &Verified::default());
        }
    }

    /// Bodies signed right verify, whatever they hold; one flipped byte does not.
    #[test]
    fn signed_bodies_verify_and_altered_ones_do_not(body in prop::collection::vec(any::<u8>(), 1..300), flip in any::<usize>()) {
        let std_key = hookcast_core::config::decode_standard_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let ts = 1_800_000_000i64;
        let signed: Vec<(usize, Vec<(String, String)>)> = vec![
            (0, vec![("x-webhook-signature".into(), sign::netlify(KEY, &body))]),
            (1, vec![("x-hub-signature-256".into(), sign::github(KEY, &body))]),
            (2, vec![
                ("webhook-id".into(), "msg_1".into()),
                ("webhook-timestamp".into(), ts.to_string()),
                ("webhook-signature".into(), sign::standard(std_key.expose(), "msg_1", ts, &body)),
            ]),
            (4, vec![("x-hub-signature-256".into(), sign::github(KEY, &body)), ("x-github-event".into(), "push".into())]),
            (5, vec![("x-vercel-signature".into(), sign::vercel(KEY, &body))]),
            (6, vec![("stripe-signature".into(), sign::stripe(KEY, ts, &body))]),
            (7, vec![("x-shopify-hmac-sha256".into(), sign::shopify(KEY, &body)), ("x-shopify-topic".into(), "orders/create".into())]),
            (8, vec![("sanity-webhook-signature".into(), sign::sanity(KEY, ts * 1000, &body))]),
            (9, {
                let topic = ("x-contentful-topic", "ContentManagement.Entry.publish");
                let mut h = sign::contentful(KEY, "/hooks/contentful", &[topic], ts * 1000, &body);
                h.push((topic.0.into(), topic.1.into()));
                h
            }),
            (10, vec![
                ("svix-id".into(), "msg_1".into()),
                ("svix-timestamp".into(), ts.to_string()),
                ("svix-signature".into(), sign::standard(std_key.expose(), "msg_1", ts, &body)),
            ]),
        ];
        let all = sources();
        let mut altered = body.clone();
        let i = flip % altered.len();
        altered[i] ^= 0x01;
        for (k, headers) in signed {
            prop_assert!(verify(&all[k], &HookRequest { headers: &headers, body: &body }, now()).is_ok(), "{}", all[k].name);
            let refused = verify(&all[k], &HookRequest { headers: &headers, body: &altered }, now());
            prop_assert!(matches!(refused, Err(HookError::Unauthorized(_))), "{}", all[k].name);
        }
    }

    /// Whatever JSON data a sender posts (numbers serde_json can write), it reaches the page unchanged.
    #[test]
    fn accepted_data_is_exactly_what_was_sent(data in json_value(), channel in "[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,2}") {
        let body = json!({"channel": channel, "event": "e", "data": data}).to_string();
        prop_assert!(check_numbers(body.as_bytes()).is_ok(), "refused its own numbers: {body}");
        let ev = normalise(&sources()[1], Some("application/json"), body.as_bytes(), &Verified::default()).unwrap().event().unwrap();
        let back: Value = serde_json::from_str(&ev.data.to_string()).unwrap();
        prop_assert_eq!(back, data);
        prop_assert_eq!(ev.channel.as_str(), channel.as_str());
    }

    /// Integers past 64 bits are refused, never rounded.
    #[test]
    fn big_integers_are_refused(extra in 1u64..u64::MAX, neg in any::<bool>()) {
        let n = (u64::MAX as u128) + extra as u128;
        let text = if neg { format!("-{n}") } else { n.to_string() };
        let body = format!(r#"{{"channel":"a","event":"e","data":{text}}}"#);
        prop_assert!(check_numbers(body.as_bytes()).is_err(), "{text}");
    }

    /// Form fields, any Unicode, repeated names included, arrive exactly.
    #[test]
    fn form_fields_arrive_exactly(pairs in prop::collection::vec(("[a-z]{1,3}", "\\PC{0,12}"), 0..8)) {
        let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "channel" && k != "event").collect();
        let mut all = vec![("channel".to_string(), "a".to_string()), ("event".to_string(), "e".to_string())];
        all.extend(pairs.clone());
        let ev = normalise(&sources()[1], Some("application/x-www-form-urlencoded"), form_encode(&all).as_bytes(), &Verified::default()).unwrap().event().unwrap();
        let mut want = serde_json::Map::new();
        for (k, v) in pairs {
            match want.get_mut(&k) {
                Some(Value::Array(a)) => a.push(Value::from(v)),
                Some(first) => *first = json!([first.take(), v]),
                None => { want.insert(k, Value::from(v)); }
            }
        }
        prop_assert_eq!(ev.data, Value::Object(want));
    }

    /// Any text as a client frame: parsed or refused with a code, never a panic.
    #[test]
    fn any_client_frame_is_parsed_or_refused(text in ".{0,200}") {
        if let Err(bad) = ClientMsg::parse(&text) {
            prop_assert!(["bad_json", "bad_message", "unknown_action", "invalid_channel"].contains(&bad.code));
        }
    }

    /// Well-formed subscribes round-trip through the parser.
    #[test]
    fn subscribes_round_trip(channel in "[a-z]{1,10}", since in prop::option::of(any::<u64>()), batch in any::<bool>(), token in prop::option::of("[A-Za-z0-9._-]{1,40}"), epoch in prop::option::of("[a-f0-9]{16}")) {
        let msg = ClientMsg::Subscribe { channel: Channel::parse(&channel).unwrap(), since, batch, token, epoch };
        prop_assert_eq!(ClientMsg::parse(&serde_json::to_string(&msg).unwrap()).unwrap(), msg);
    }

    /// Tokens: what is minted checks; anything else is refused without a panic.
    #[test]
    fn tokens_check_only_when_minted_with_the_key(garbage in ".{0,120}", name in "[a-z]{1,8}", ttl in 1.0f64..1e6) {
        let channel = Channel::parse(&name).unwrap();
        let exp = 1_800_000_000.0 + ttl;
        let t = mint(KEY, &Claims { channels: vec![name.clone()], exp });
        prop_assert!(check(KEY, Some(&t), &channel, now()).is_ok());
        prop_assert!(check(b"another-key-0123456789abcdef", Some(&t), &channel, now()).is_err());
        prop_assert!(check(KEY, Some(&garbage), &channel, now()).is_err());
        let late = UNIX_EPOCH + Duration::from_secs_f64(exp + 1.0);
        prop_assert!(check(KEY, Some(&t), &channel, late).is_err());
    }
}
