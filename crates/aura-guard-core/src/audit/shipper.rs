//! The shipper's logic, pure: chaining (stream/seq/prev_hash), a bounded buffer, batching by
//! count and time, retry with capped exponential back-off, and gap records for every loss.
//! The service VM glue only feeds it entries and the clock, sends the batches it returns, and
//! reports each batch's result.
//!
//! Guarantees:
//! - A record is chained (gets its seq) when it enters the buffer and stays there until the
//!   collector acknowledged it (2xx), refused it for good (400/409/413), or refused it
//!   `max_attempts` times with another status (500, 401, ...: [`unavailable`] says which are
//!   not counted). Unavailability (no answer: timeout, reset, unreachable; 429, 502, 503, 504)
//!   is retried without bound. A retry sends the same records again, so the collector's
//!   idempotency by id makes a retry after a lost answer harmless.
//! - The buffer holds at most `max_buffer_records` records, plus at most one gap record per
//!   drop reason; a record arriving at a full buffer is dropped, consumes no seq, and is
//!   counted; a gap record stating the count enters the chain as soon as there is room.
//! - One batch is in flight at a time, so records reach the collector in seq order.

use super::config::ShipperConfig;
use super::format::{line_hash, Entry, Wire, VERSION, ZERO_HASH};
use super::record::gap_entry;
use std::collections::VecDeque;

/// Drop reasons carried in gap records.
pub const REASON_QUEUE_FULL: &str = "queue_full";
pub const REASON_INVALID: &str = "invalid_record";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Chained {
    seq: u64,
    line: Vec<u8>,
    queued_ms: u64,
}

/// What happened to an offered entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The buffer was full: dropped, counted, reported by a gap record.
    Dropped,
    /// Not a valid entry (a bug): dropped, counted, reported by a gap record.
    Invalid,
}

/// A batch to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// NDJSON, one record per line, final LF.
    pub body: Vec<u8>,
    pub records: usize,
    pub first_seq: u64,
}

/// How a batch request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchResult {
    /// The collector answered with this status.
    Status(u32),
    /// No answer: timeout, reset, connection refused, dispatch failure.
    Failed,
}

/// What the shipper made of a batch result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Shipped {
        records: usize,
    },
    /// Kept; sent again after `delay_ms`.
    Retry {
        delay_ms: u64,
    },
    /// Refused for good (400/409/413): dropped and reported by a gap record.
    Rejected {
        records: usize,
    },
    /// Refused `max_attempts` times with a status that is not unavailability (the last one
    /// here): dropped and reported by a gap record (`retries_exhausted_<status>`).
    GaveUp {
        records: usize,
        status: u32,
    },
    /// A result arrived with no batch in flight (ignored).
    Unexpected,
}

#[derive(Debug)]
pub struct Shipper {
    cfg: ShipperConfig,
    stream: String,
    next_seq: u64,
    prev_hash: String,
    buffer: VecDeque<Chained>,
    /// Records at the front of the buffer that are in flight (0: none).
    in_flight: usize,
    backoff_ms: u64,
    retry_at_ms: u64,
    /// Consecutive failed attempts of the current batch.
    failures: u32,
    /// Of those, the attempts refused with a status that is not unavailability.
    refusals: u32,
    /// Losses not yet stated by a gap record: (reason, count), in order of first loss.
    pending_gaps: Vec<(String, u64)>,
}

/// Whether a status means "the collector cannot take it now, retry later" (no bound on the
/// attempts): 503 is the collector's own storage failure, 502/503/504 are Envoy's when the
/// collector is down, unreachable or slow, 429 asks to come back later. Any other failure
/// status (500, 401, 404, ...) may be the batch itself or a standing misconfiguration, and is
/// bounded by `max_attempts` so that one batch cannot hold back every record after it.
pub fn unavailable(status: u32) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// `<prefix>-<start ms>-<8 hex>`: unique per shipper lifetime.
pub fn stream_id(prefix: &str, start_ms: u64, random: [u8; 4]) -> String {
    format!("{prefix}-{start_ms}-{}", hex::encode(random))
}

impl Shipper {
    pub fn new(cfg: ShipperConfig, stream: String) -> Self {
        let backoff_ms = cfg.initial_backoff_ms;
        Shipper {
            cfg,
            stream,
            next_seq: 1,
            prev_hash: ZERO_HASH.to_owned(),
            buffer: VecDeque::new(),
            in_flight: 0,
            backoff_ms,
            retry_at_ms: 0,
            failures: 0,
            refusals: 0,
            pending_gaps: Vec::new(),
        }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The last seq given to a record of this stream (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Records held (waiting or in flight), gap records included.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// Takes one serialised [`Entry`] from a worker.
    pub fn offer(&mut self, entry: &[u8], now_ms: u64) -> Offer {
        self.emit_gaps(now_ms);
        if self.buffer.len() >= self.cfg.max_buffer_records {
            self.note_loss(REASON_QUEUE_FULL, 1);
            return Offer::Dropped;
        }
        match serde_json::from_slice::<Entry>(entry) {
            Ok(e) => {
                if self.chain(e, now_ms) {
                    Offer::Queued
                } else {
                    self.note_loss(REASON_INVALID, 1);
                    Offer::Invalid
                }
            }
            Err(_) => {
                self.note_loss(REASON_INVALID, 1);
                Offer::Invalid
            }
        }
    }

    /// The next batch to send, if one is due: none in flight, back-off elapsed, and either a
    /// full batch waiting or the oldest record waiting `flush_interval_ms` (a retry is due as
    /// soon as its back-off ends).
    pub fn next_batch(&mut self, now_ms: u64) -> Option<Batch> {
        self.emit_gaps(now_ms);
        if self.in_flight > 0 || now_ms < self.retry_at_ms {
            return None;
        }
        let oldest = self.buffer.front()?;
        let first_seq = oldest.seq;
        let due = self.failures > 0
            || self.buffer.len() >= self.cfg.batch_size
            || now_ms.saturating_sub(oldest.queued_ms) >= self.cfg.flush_interval_ms;
        if !due {
            return None;
        }
        let mut body = Vec::new();
        let mut records = 0;
        for rec in self.buffer.iter().take(self.cfg.batch_size) {
            let grown = body.len().saturating_add(rec.line.len()).saturating_add(1);
            if records > 0 && grown > self.cfg.max_batch_bytes {
                break;
            }
            body.extend_from_slice(&rec.line);
            body.push(b'\n');
            records += 1;
        }
        self.in_flight = records;
        Some(Batch {
            body,
            records,
            first_seq,
        })
    }

    /// The result of the batch in flight.
    pub fn on_result(&mut self, result: BatchResult, now_ms: u64) -> Outcome {
        if self.in_flight == 0 {
            return Outcome::Unexpected;
        }
        let records = self.in_flight;
        self.in_flight = 0;
        match result {
            BatchResult::Status(s) if (200..300).contains(&s) => {
                self.buffer.drain(..records.min(self.buffer.len()));
                self.reset_backoff();
                self.emit_gaps(now_ms);
                Outcome::Shipped { records }
            }
            BatchResult::Status(s @ (400 | 409 | 413)) => {
                self.drop_batch(records, &format!("rejected_{s}"), now_ms);
                Outcome::Rejected { records }
            }
            BatchResult::Status(s) if !unavailable(s) => {
                self.refusals = self.refusals.saturating_add(1);
                if self.refusals >= self.cfg.max_attempts {
                    self.drop_batch(records, &format!("retries_exhausted_{s}"), now_ms);
                    return Outcome::GaveUp { records, status: s };
                }
                self.retry_later(now_ms)
            }
            BatchResult::Status(_) | BatchResult::Failed => self.retry_later(now_ms),
        }
    }

    /// Attempts of the current batch refused with a status that is not unavailability (the
    /// ones `max_attempts` bounds).
    pub fn refusals(&self) -> u32 {
        self.refusals
    }

    /// Drops the `records` at the front (the batch that was in flight) and states the loss.
    fn drop_batch(&mut self, records: usize, reason: &str, now_ms: u64) {
        self.buffer.drain(..records.min(self.buffer.len()));
        self.reset_backoff();
        self.note_loss(reason, records as u64);
        self.emit_gaps(now_ms);
    }

    fn retry_later(&mut self, now_ms: u64) -> Outcome {
        let delay_ms = self.backoff_ms;
        self.failures = self.failures.saturating_add(1);
        self.retry_at_ms = now_ms.saturating_add(delay_ms);
        self.backoff_ms = self
            .backoff_ms
            .saturating_mul(2)
            .min(self.cfg.max_backoff_ms);
        Outcome::Retry { delay_ms }
    }

    fn reset_backoff(&mut self) {
        self.failures = 0;
        self.refusals = 0;
        self.retry_at_ms = 0;
        self.backoff_ms = self.cfg.initial_backoff_ms;
    }

    fn note_loss(&mut self, reason: &str, count: u64) {
        match self.pending_gaps.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n = n.saturating_add(count),
            None => self.pending_gaps.push((reason.to_owned(), count)),
        }
    }

    /// States pending losses in the chain while there is room (a gap may take the last slot;
    /// each reason's gap can exceed the limit by one, so the buffer stays bounded).
    fn emit_gaps(&mut self, now_ms: u64) {
        while !self.pending_gaps.is_empty() && self.buffer.len() < self.cfg.max_buffer_records {
            let (reason, count) = self.pending_gaps.remove(0);
            let gap = gap_entry(now_ms, count, &reason);
            if !self.chain(gap, now_ms) {
                break;
            }
        }
    }

    /// Gives the entry the next seq and the previous line's hash, and buffers the line.
    fn chain(&mut self, entry: Entry, now_ms: u64) -> bool {
        let seq = self.next_seq;
        let line = Wire {
            v: VERSION,
            id: format!("{}-{seq}", self.stream),
            entry,
            stream: self.stream.clone(),
            seq,
            prev_hash: self.prev_hash.clone(),
        };
        let Ok(bytes) = serde_json::to_vec(&line) else {
            return false;
        };
        self.prev_hash = line_hash(&bytes);
        self.next_seq = seq.saturating_add(1);
        self.buffer.push_back(Chained {
            seq,
            line: bytes,
            queued_ms: now_ms,
        });
        true
    }
}

/// A worker's serialised operation entry numbered `n` (its body is `{"n": n}`), for the
/// shipper's and the service's tests.
#[cfg(test)]
pub(crate) fn test_entry(n: u64) -> Vec<u8> {
    use super::record::{operation_entry, Completion, RequestFacts};
    let facts = RequestFacts {
        start_ms: 1000 + n,
        method: "POST".into(),
        path: format!("/api/v1/payments/refund?n={n}"),
        ..RequestFacts::default()
    };
    let e = operation_entry(
        &facts,
        "payment_refund",
        &Completion::default(),
        serde_json::json!({"n": n}),
        serde_json::json!({}),
    );
    serde_json::to_vec(&e).unwrap()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::test_entry as entry;
    use super::*;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};

    fn cfg(batch: usize, buffer: usize) -> ShipperConfig {
        ShipperConfig {
            batch_size: batch,
            max_buffer_records: buffer,
            flush_interval_ms: 1000,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            ..ShipperConfig::default()
        }
    }

    fn lines(b: &Batch) -> Vec<Value> {
        let text = std::str::from_utf8(&b.body).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn raw_lines(b: &Batch) -> Vec<String> {
        std::str::from_utf8(&b.body)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn records_are_chained_by_seq_and_sha256_of_the_previous_line() {
        let mut s = Shipper::new(cfg(3, 10), "edge-1-abcd".into());
        for n in 0..3 {
            assert_eq!(s.offer(&entry(n), 0), Offer::Queued);
        }
        let b = s.next_batch(0).unwrap();
        let v = lines(&b);
        let raw = raw_lines(&b);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0]["seq"], 1);
        assert_eq!(v[0]["prev_hash"], ZERO_HASH);
        assert_eq!(v[0]["id"], "edge-1-abcd-1");
        assert_eq!(v[0]["v"], 1);
        assert_eq!(v[0]["stream"], "edge-1-abcd");
        for i in 1..3 {
            assert_eq!(v[i]["seq"], i as u64 + 1);
            assert_eq!(
                v[i]["prev_hash"],
                hex::encode(Sha256::digest(raw[i - 1].as_bytes()))
            );
        }
        assert_eq!(v[2]["request_body"], json!({"n": 2}));
    }

    #[test]
    fn a_batch_goes_when_full_or_when_the_oldest_record_waited_the_interval() {
        let mut s = Shipper::new(cfg(2, 10), "s".into());
        s.offer(&entry(0), 0);
        assert!(s.next_batch(999).is_none(), "not full, not old");
        assert_eq!(s.next_batch(1000).unwrap().records, 1);
        assert_eq!(
            s.on_result(BatchResult::Status(200), 1000),
            Outcome::Shipped { records: 1 }
        );
        s.offer(&entry(1), 1001);
        s.offer(&entry(2), 1002);
        s.offer(&entry(3), 1003);
        let b = s.next_batch(1003).unwrap();
        assert_eq!((b.records, b.first_seq), (2, 2), "full batch at once");
        assert!(
            s.next_batch(5000).is_none(),
            "one batch in flight at a time"
        );
        s.on_result(BatchResult::Status(200), 1004);
        assert!(s.next_batch(1004).is_none());
        assert_eq!(s.next_batch(2003).unwrap().first_seq, 4);
    }

    #[test]
    fn batch_bytes_are_bounded_but_a_batch_holds_at_least_one_record() {
        let mut c = cfg(100, 100);
        c.max_batch_bytes = 10;
        let mut s = Shipper::new(c, "s".into());
        s.offer(&entry(0), 0);
        s.offer(&entry(1), 0);
        assert_eq!(s.next_batch(5000).unwrap().records, 1);
    }

    #[test]
    fn failed_batches_are_retried_unchanged_with_capped_exponential_backoff() {
        let mut s = Shipper::new(cfg(1, 10), "s".into());
        s.offer(&entry(0), 0);
        let first = s.next_batch(0).unwrap();
        let mut now = 0;
        let mut delays = Vec::new();
        for result in [
            BatchResult::Failed,
            BatchResult::Status(503),
            BatchResult::Status(500),
            BatchResult::Status(401),
            BatchResult::Failed,
            BatchResult::Failed,
        ] {
            let Outcome::Retry { delay_ms } = s.on_result(result, now) else {
                panic!("retry expected")
            };
            delays.push(delay_ms);
            assert!(
                s.next_batch(now + delay_ms - 1).is_none(),
                "waits the back-off"
            );
            now += delay_ms;
            let again = s.next_batch(now).unwrap();
            assert_eq!(again, first, "same bytes");
        }
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            s.on_result(BatchResult::Status(200), now),
            Outcome::Shipped { records: 1 }
        );
        // Back-off resets after a success.
        s.offer(&entry(1), now);
        s.next_batch(now).unwrap();
        assert_eq!(
            s.on_result(BatchResult::Failed, now),
            Outcome::Retry { delay_ms: 100 }
        );
    }

    #[test]
    fn a_batch_refused_max_attempts_times_is_dropped_so_the_records_after_it_ship() {
        // A poison batch (the collector answers 500 to it, or 401) must not hold back every
        // record behind it forever: after `max_attempts` refusals it is dropped, and a gap
        // record states the missing seqs (docs/audit.md §9.4).
        for status in [500, 401, 404] {
            let mut c = cfg(2, 10);
            c.max_attempts = 3;
            let mut s = Shipper::new(c, "s".into());
            for n in 0..3 {
                s.offer(&entry(n), 0);
            }
            let mut now = 0;
            let first = s.next_batch(now).unwrap();
            for attempt in 1..3 {
                let Outcome::Retry { delay_ms } = s.on_result(BatchResult::Status(status), now)
                else {
                    panic!("retry expected on attempt {attempt}")
                };
                assert_eq!(s.refusals(), attempt);
                now += delay_ms;
                assert_eq!(s.next_batch(now).unwrap(), first, "the same records again");
            }
            assert_eq!(
                s.on_result(BatchResult::Status(status), now),
                Outcome::GaveUp { records: 2, status }
            );
            assert_eq!(s.refusals(), 0);
            assert_eq!(s.buffered(), 2, "seq 3 and the gap");
            // Sent at once: no back-off after a drop.
            let v = lines(&s.next_batch(now + 1000).unwrap());
            assert_eq!(v[0]["seq"], 3);
            assert_eq!(v[0]["request_body"], json!({"n": 2}));
            assert_eq!(v[1]["seq"], 4);
            assert_eq!(v[1]["kind"], "gap");
            assert_eq!(
                v[1]["metadata"],
                json!({"dropped": 2, "reason": format!("retries_exhausted_{status}")})
            );
        }
    }

    #[test]
    fn unavailability_is_retried_without_bound_and_does_not_count_toward_max_attempts() {
        let mut c = cfg(1, 10);
        c.max_attempts = 2;
        let mut s = Shipper::new(c, "s".into());
        s.offer(&entry(0), 0);
        let first = s.next_batch(0).unwrap();
        let mut now = 0;
        for round in 0..100 {
            let result = match round % 5 {
                0 => BatchResult::Failed,
                1 => BatchResult::Status(503),
                2 => BatchResult::Status(502),
                3 => BatchResult::Status(504),
                _ => BatchResult::Status(429),
            };
            let Outcome::Retry { delay_ms } = s.on_result(result, now) else {
                panic!("unavailability is retried")
            };
            assert_eq!(s.refusals(), 0);
            now += delay_ms;
            assert_eq!(s.next_batch(now).unwrap(), first);
        }
        // Refusals interleaved with unavailability still add up to the bound.
        assert!(matches!(
            s.on_result(BatchResult::Status(500), now),
            Outcome::Retry { .. }
        ));
        now += 1000;
        s.next_batch(now).unwrap();
        assert!(matches!(
            s.on_result(BatchResult::Status(503), now),
            Outcome::Retry { .. }
        ));
        now += 1000;
        s.next_batch(now).unwrap();
        assert_eq!(
            s.on_result(BatchResult::Status(500), now),
            Outcome::GaveUp {
                records: 1,
                status: 500
            }
        );
    }

    #[test]
    fn a_success_resets_the_refusal_count() {
        let mut c = cfg(1, 10);
        c.max_attempts = 2;
        let mut s = Shipper::new(c, "s".into());
        s.offer(&entry(0), 0);
        s.offer(&entry(1), 0);
        s.next_batch(0).unwrap();
        s.on_result(BatchResult::Status(500), 0);
        s.next_batch(1000).unwrap();
        assert_eq!(
            s.on_result(BatchResult::Status(200), 1000),
            Outcome::Shipped { records: 1 }
        );
        s.next_batch(1000).unwrap();
        assert!(matches!(
            s.on_result(BatchResult::Status(500), 1000),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn overflow_drops_new_records_without_seq_and_a_gap_states_the_count() {
        let mut s = Shipper::new(cfg(2, 3), "s".into());
        for n in 0..3 {
            assert_eq!(s.offer(&entry(n), 0), Offer::Queued);
        }
        for n in 3..8 {
            assert_eq!(s.offer(&entry(n), 0), Offer::Dropped);
        }
        assert_eq!(s.buffered(), 3);
        let b = s.next_batch(0).unwrap();
        assert_eq!(b.records, 2);
        s.on_result(BatchResult::Status(200), 10);
        // Room again: the gap enters the chain right after seq 3.
        assert_eq!(s.offer(&entry(8), 20), Offer::Queued);
        let b = s.next_batch(5000).unwrap();
        let v = lines(&b);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0]["seq"], 3);
        assert_eq!(v[1]["seq"], 4);
        assert_eq!(v[1]["kind"], "gap");
        assert_eq!(v[1]["type"], "records_dropped");
        assert_eq!(v[1]["severity"], "high");
        assert_eq!(v[1]["outcome"], "dropped");
        assert_eq!(
            v[1]["metadata"],
            json!({"dropped": 5, "reason": "queue_full"})
        );
        assert_eq!(v[1]["method"], Value::Null);
        s.on_result(BatchResult::Status(200), 5000);
        let b = s.next_batch(9000).unwrap();
        let v = lines(&b);
        assert_eq!(v[0]["seq"], 5);
        assert_eq!(v[0]["request_body"], json!({"n": 8}));
    }

    #[test]
    fn the_buffer_never_exceeds_its_bound_plus_one_gap_per_reason() {
        let mut s = Shipper::new(cfg(5, 5), "s".into());
        let mut now = 0;
        for round in 0..50u64 {
            for n in 0..7 {
                s.offer(&entry(round * 10 + n), now);
                assert!(s.buffered() <= 5 + 2, "{}", s.buffered());
            }
            if let Some(_b) = s.next_batch(now) {
                let r = if round % 3 == 0 {
                    BatchResult::Status(400)
                } else {
                    BatchResult::Status(200)
                };
                s.on_result(r, now);
            }
            now += 2000;
        }
    }

    #[test]
    fn rejected_batch_is_dropped_and_the_gap_explains_the_missing_seqs() {
        for status in [400, 409, 413] {
            let mut s = Shipper::new(cfg(2, 10), "s".into());
            s.offer(&entry(0), 0);
            s.offer(&entry(1), 0);
            s.offer(&entry(2), 0);
            s.next_batch(0).unwrap();
            assert_eq!(
                s.on_result(BatchResult::Status(status), 0),
                Outcome::Rejected { records: 2 }
            );
            let v = lines(&s.next_batch(5000).unwrap());
            assert_eq!(v[0]["seq"], 3);
            assert_eq!(v[1]["seq"], 4);
            assert_eq!(v[1]["kind"], "gap");
            assert_eq!(
                v[1]["metadata"],
                json!({"dropped": 2, "reason": format!("rejected_{status}")})
            );
        }
    }

    #[test]
    fn invalid_entries_are_counted_as_a_gap() {
        let mut s = Shipper::new(cfg(5, 10), "s".into());
        assert_eq!(s.offer(b"not json", 0), Offer::Invalid);
        assert_eq!(s.offer(br#"{"extra":1}"#, 0), Offer::Invalid);
        s.offer(&entry(0), 0);
        // Each loss is stated as soon as there is room: before the next record is chained.
        let v = lines(&s.next_batch(5000).unwrap());
        assert_eq!(v.len(), 3);
        for gap in &v[..2] {
            assert_eq!(
                gap["metadata"],
                json!({"dropped": 1, "reason": "invalid_record"})
            );
        }
        assert_eq!(v[2]["seq"], 3);
        assert_eq!(v[2]["kind"], "operation");
    }

    #[test]
    fn a_result_without_a_batch_in_flight_is_ignored() {
        let mut s = Shipper::new(cfg(5, 10), "s".into());
        assert_eq!(
            s.on_result(BatchResult::Status(200), 0),
            Outcome::Unexpected
        );
    }

    #[test]
    fn stream_ids_are_valid_record_ids() {
        let id = stream_id("edge1", 1_764_384_000_000, [0xa1, 0xb2, 0, 9]);
        assert_eq!(id, "edge1-1764384000000-a1b20009");
    }
}
