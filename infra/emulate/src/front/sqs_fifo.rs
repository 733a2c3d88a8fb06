//! SQS FIFO deduplication as SQS does it, in front of moto.
//!
//! "If a message with a particular message deduplication ID is sent
//! successfully, any messages sent with the same message deduplication ID
//! are accepted successfully but aren't delivered during the 5-minute
//! deduplication interval" (Amazon SQS Developer Guide, "Using the message
//! deduplication ID"), within the queue or, with `DeduplicationScope:
//! messageGroup`, within the message group. moto compares a new message
//! only with those still in the queue: one already received and deleted is
//! forgotten, so it delivers a second copy that SQS would drop. The stack
//! relies on SQS's rule (a commit's jobs are sent by the webhook function
//! and again by the stream's dispatcher), so the front keeps it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// SQS's deduplication interval.
pub const INTERVAL: Duration = Duration::from_secs(300);

/// Deduplication ids seen, per queue (and group, where the queue says so).
#[derive(Default)]
pub struct Dedupe {
    /// Key → when it was first sent, and what SQS answered for it then
    /// (`None` while that send is in flight).
    seen: HashMap<String, (Instant, Option<Value>)>,
    order: VecDeque<(Instant, String)>,
    /// Queue URL → whether its scope is the message group.
    scopes: HashMap<String, bool>,
}

/// What one entry comes to.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// Never sent within the interval: send it (and [`Dedupe::settle`] it).
    New,
    /// A duplicate: answer it as sent, with the first send's answer.
    Duplicate(Option<Value>),
}

impl Dedupe {
    pub fn key(queue: &str, group_scope: bool, group: &str, id: &str) -> String {
        if group_scope {
            format!("{queue}\u{0}{group}\u{0}{id}")
        } else {
            format!("{queue}\u{0}\u{0}{id}")
        }
    }
    pub fn scope(&self, queue: &str) -> Option<bool> {
        self.scopes.get(queue).copied()
    }
    pub fn set_scope(&mut self, queue: &str, group: bool) {
        self.scopes.insert(queue.to_owned(), group);
    }
    /// Claims `key` at `now` unless it was sent within the interval.
    pub fn claim(&mut self, key: &str, now: Instant) -> Seen {
        while let Some((t, k)) = self.order.front() {
            if now.duration_since(*t) < INTERVAL {
                break;
            }
            if self.seen.get(k).is_some_and(|(at, _)| at == t) {
                self.seen.remove(k);
            }
            self.order.pop_front();
        }
        if let Some((_, answer)) = self.seen.get(key) {
            return Seen::Duplicate(answer.clone());
        }
        self.seen.insert(key.to_owned(), (now, None));
        self.order.push_back((now, key.to_owned()));
        Seen::New
    }
    /// The send of a claimed key succeeded with `answer`.
    pub fn settle(&mut self, key: &str, answer: Value) {
        if let Some(e) = self.seen.get_mut(key) {
            e.1 = Some(answer);
        }
    }
    /// The send of a claimed key failed: it was never sent.
    pub fn release(&mut self, key: &str) {
        self.seen.remove(key);
    }
}

/// The answer SQS gives a duplicate: the first send's, or (while that is
/// still in flight) one of the same shape.
pub fn duplicate_answer(first: Option<Value>, body: &str) -> Value {
    first.unwrap_or_else(|| {
        json!({"MessageId": format!("{:032x}", rand::random::<u128>()), "MD5OfMessageBody": md5_hex(body.as_bytes()),
               "SequenceNumber": "0"})
    })
}

/// MD5 (RFC 1321), as SQS reports a message body's digest.
pub fn md5_hex(data: &[u8]) -> String {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 4,
        11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64).map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32).collect();
    let (mut a0, mut b0, mut c0, mut d0) = (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk.chunks(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    [a0, b0, c0, d0].iter().flat_map(|w| w.to_le_bytes()).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc_1321s_test_suite() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(md5_hex(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn an_id_is_a_duplicate_for_five_minutes_after_its_send_whether_or_not_it_was_received() {
        let mut d = Dedupe::default();
        let t = Instant::now();
        let k = Dedupe::key("q.fifo", true, "g", "id1");
        assert_eq!(d.claim(&k, t), Seen::New);
        d.settle(&k, json!({"MessageId": "m1"}));
        assert_eq!(d.claim(&k, t + Duration::from_secs(299)), Seen::Duplicate(Some(json!({"MessageId": "m1"}))));
        // Another group with the group scope is another message; the queue scope is not.
        assert_eq!(d.claim(&Dedupe::key("q.fifo", true, "h", "id1"), t), Seen::New);
        assert_eq!(d.claim(&Dedupe::key("q.fifo", false, "x", "id2"), t), Seen::New);
        assert!(matches!(d.claim(&Dedupe::key("q.fifo", false, "y", "id2"), t), Seen::Duplicate(_)));
        // Past the interval it is new again; a failed send never counted.
        assert_eq!(d.claim(&k, t + Duration::from_secs(301)), Seen::New);
        let f = Dedupe::key("q.fifo", true, "g", "failed");
        assert_eq!(d.claim(&f, t + Duration::from_secs(301)), Seen::New);
        d.release(&f);
        assert_eq!(d.claim(&f, t + Duration::from_secs(302)), Seen::New);
    }
}
