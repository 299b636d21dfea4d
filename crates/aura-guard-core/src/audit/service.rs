//! The audit shipper's service loop (docs/audit.md §9.4): what the singleton service VM does
//! on its callbacks. It drains the shared queue into the [`Shipper`], POSTs the batches the
//! shipper hands out to the collector cluster, one at a time, feeds each answer back, and keeps
//! the counters and the log. The host is behind [`ServiceHost`], so the glue
//! (`src/audit_service.rs`) only moves bytes and the loop is unit-tested with a mock.
//!
//! The bearer token comes from [`TOKEN_ENV`] and is never logged.

use super::config::{check_token, ShipperConfig};
use super::shipper::{stream_id, BatchResult, Offer, Outcome, Shipper};
use crate::host::Level;

/// The environment variable holding the collector's bearer token.
pub const TOKEN_ENV: &str = "AUDIT_COLLECTOR_TOKEN";
/// The batch header carrying the last seq the shipper has chained in its stream.
pub const CHAINED_HEADER: &str = "x-aura-audit-chained";
/// The most of a refusal's body quoted in the log (the collector names a line and a field).
pub const MAX_DETAIL_BYTES: usize = 300;

// Envoy stats (`wasmcustom.<name>`); the workers count `enqueued`/`enqueue_failed` themselves.
const DROPPED: &str = "aura_guard.audit.dropped";
const INVALID: &str = "aura_guard.audit.invalid";
const BATCHES_SHIPPED: &str = "aura_guard.audit.batches_shipped";
const RECORDS_SHIPPED: &str = "aura_guard.audit.records_shipped";
const BATCHES_FAILED: &str = "aura_guard.audit.batches_failed";
const BATCHES_REJECTED: &str = "aura_guard.audit.batches_rejected";
const BUFFERED: &str = "aura_guard.audit.buffered";
/// Counted on every tick: alert when it stops growing (the shipper is dead or stuck).
const TICKS: &str = "aura_guard.audit.ticks";
/// The shipper's heartbeat (docs/robustness.md): a gauge holding the host's monotonic time in
/// ms until which the shipper vouches it is alive, written at configure and on every tick.
/// The workers read the same gauge (Envoy keeps one stat per name) and count a record as
/// dropped instead of enqueuing it once that time has passed ([`shipper_alive`]).
pub const ALIVE_UNTIL: &str = "aura_guard.audit.alive_until_ms";
/// The least a heartbeat vouches for: a tick can be late while Envoy's main thread is busy.
pub const MIN_ALIVE_MS: u64 = 10_000;

/// How long one heartbeat vouches for: three ticks, at least [`MIN_ALIVE_MS`].
pub fn alive_for_ms(tick_ms: u64) -> u64 {
    tick_ms.saturating_mul(3).max(MIN_ALIVE_MS)
}

/// Whether a worker should still enqueue: the shipper's heartbeat ([`ALIVE_UNTIL`]; 0 when it
/// never wrote one, e.g. a host without a monotonic clock) against the worker's monotonic now.
pub fn shipper_alive(alive_until_ms: u64, monotonic_now_ms: u64) -> bool {
    alive_until_ms == 0 || monotonic_now_ms <= alive_until_ms
}

/// A batch POST for the host to dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCall<'a> {
    /// Envoy cluster of the collector.
    pub cluster: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub timeout_ms: u64,
}

/// What the shipper's loop needs from the host. An `Err` carries the host's status as text,
/// for the log.
pub trait ServiceHost {
    /// Unix time in milliseconds (the wall clock: it can step, backwards too).
    fn now_ms(&self) -> u64;
    /// The host's monotonic clock in milliseconds (any origin, never steps back); None when
    /// the host has none. The shipper's timers run on it.
    fn monotonic_ms(&self) -> Option<u64>;
    fn log(&mut self, level: Level, message: &str);
    /// Four unpredictable bytes for the stream id; None when the host has none.
    fn random4(&mut self) -> Option<[u8; 4]>;
    /// An environment variable of the VM; None when unset or not UTF-8.
    fn env_var(&self, name: &str) -> Option<String>;
    /// Registers the shared queue the workers enqueue on; its id.
    fn register_queue(&mut self, name: &str) -> Result<u32, String>;
    fn set_tick_period_ms(&mut self, period_ms: u64) -> Result<(), String>;
    /// The next item of the queue; `Ok(None)` when it is empty.
    fn dequeue(&mut self, queue_id: u32) -> Result<Option<Vec<u8>>, String>;
    /// Dispatches the call; its answer comes back to
    /// [`AuditService::on_http_call_response`] with the returned token.
    fn dispatch_http(&mut self, call: &HttpCall<'_>) -> Result<u32, String>;
    /// Adds `n` (> 0) to a counter, created on first use.
    fn add_counter(&mut self, name: &'static str, n: u64);
    fn set_gauge(&mut self, name: &'static str, value: u64);
}

/// How many bytes of an answer's body the glue should read for the log: some of a refusal's,
/// none of a success's or when there is no status.
pub fn detail_len(status: Option<u32>, body_size: usize) -> usize {
    if status.is_some_and(|s| !(200..300).contains(&s)) {
        body_size.min(MAX_DETAIL_BYTES)
    } else {
        0
    }
}

fn add(host: &mut dyn ServiceHost, name: &'static str, n: u64) {
    // An increment of 0 would only define the metric.
    if n > 0 {
        host.add_counter(name, n);
    }
}

pub struct AuditService {
    cfg: ShipperConfig,
    shipper: Shipper,
    /// None: no token configured; every record is dropped and counted.
    token: Option<String>,
    queue_id: u32,
    in_flight: Option<u32>,
    /// (wall, monotonic) ms at configure; None without a monotonic clock. See `now`.
    clock: Option<(u64, u64)>,
}

impl AuditService {
    /// `on_configure` of the service root. Errors are logged; None makes Envoy refuse the
    /// configuration.
    pub fn configure(host: &mut dyn ServiceHost, raw: &[u8]) -> Option<AuditService> {
        let cfg = match ShipperConfig::load(raw) {
            Ok(c) => c,
            Err(err) => {
                host.log(
                    Level::Error,
                    &format!("aura-guard audit: invalid configuration: {err}"),
                );
                return None;
            }
        };
        let token = match host.env_var(TOKEN_ENV) {
            Some(t) if !t.is_empty() => {
                if let Err(err) = check_token(&t) {
                    host.log(
                        Level::Error,
                        &format!("aura-guard audit: invalid configuration: {err}"),
                    );
                    return None;
                }
                Some(t)
            }
            _ => {
                host.log(
                    Level::Error,
                    &format!(
                        "aura-guard audit: {TOKEN_ENV} is not set: audit records cannot be \
                         shipped and are dropped (counted in aura_guard.audit.dropped)"
                    ),
                );
                None
            }
        };
        let queue_id = match host.register_queue(&cfg.queue_name) {
            Ok(id) => id,
            Err(status) => {
                host.log(
                    Level::Error,
                    &format!("aura-guard audit: register_shared_queue failed: {status}"),
                );
                return None;
            }
        };
        if let Err(status) = host.set_tick_period_ms(cfg.tick_ms) {
            host.log(
                Level::Error,
                &format!("aura-guard audit: set_tick_period failed: {status}"),
            );
            return None;
        }
        // Without randomness the start time alone still separates restarts.
        let random = match host.random4() {
            Some(r) => r,
            None => (host.now_ms() as u32).to_le_bytes(),
        };
        let stream = stream_id(&cfg.stream_prefix, host.now_ms(), random);
        host.log(
            Level::Info,
            &format!(
                "aura-guard audit: shipper ready: stream {stream}, cluster {}, queue {}, batch {} / {} ms, buffer {}",
                cfg.cluster, cfg.queue_name, cfg.batch_size, cfg.flush_interval_ms, cfg.max_buffer_records
            ),
        );
        let clock = host.monotonic_ms().map(|mono| (host.now_ms(), mono));
        let service = AuditService {
            shipper: Shipper::new(cfg.clone(), stream),
            cfg,
            token,
            queue_id,
            in_flight: None,
            clock,
        };
        service.heartbeat(host);
        Some(service)
    }

    /// The shipper's time: the wall clock at configure plus the monotonic time since, so a
    /// step of the wall clock (backwards: flushes and retries would wait until it caught up)
    /// moves no timer, and gap records still carry a wall-clock `ts`. The wall clock alone
    /// when the host has no monotonic clock.
    fn now(&self, host: &dyn ServiceHost) -> u64 {
        match (self.clock, host.monotonic_ms()) {
            (Some((wall_start, mono_start)), Some(mono)) => {
                wall_start.saturating_add(mono.saturating_sub(mono_start))
            }
            _ => host.now_ms(),
        }
    }

    /// Writes [`ALIVE_UNTIL`] (nothing without a monotonic clock: workers then never judge).
    fn heartbeat(&self, host: &mut dyn ServiceHost) {
        if let Some(mono) = host.monotonic_ms() {
            host.set_gauge(
                ALIVE_UNTIL,
                mono.saturating_add(alive_for_ms(self.cfg.tick_ms)),
            );
        }
    }

    /// Drains the queue into the shipper, then sends a batch if one is due.
    pub fn on_queue_ready(&mut self, host: &mut dyn ServiceHost, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        let now = self.now(host);
        loop {
            match host.dequeue(queue_id) {
                Ok(Some(entry)) => {
                    if self.token.is_none() {
                        add(host, DROPPED, 1);
                        continue;
                    }
                    match self.shipper.offer(&entry, now) {
                        Offer::Queued => {}
                        Offer::Dropped => add(host, DROPPED, 1),
                        Offer::Invalid => {
                            add(host, DROPPED, 1);
                            add(host, INVALID, 1);
                        }
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    host.log(
                        Level::Warn,
                        &format!("aura-guard audit: dequeue failed: {status}"),
                    );
                    break;
                }
            }
        }
        self.pump(host, now);
    }

    pub fn on_tick(&mut self, host: &mut dyn ServiceHost) {
        add(host, TICKS, 1);
        self.heartbeat(host);
        let now = self.now(host);
        self.pump(host, now);
    }

    /// Is `token_id` the batch in flight? The glue reads an answer only then.
    pub fn awaits(&self, token_id: u32) -> bool {
        self.in_flight == Some(token_id)
    }

    /// The collector's answer to the batch in flight: its status and, for a refusal, the start
    /// of its body (see [`detail_len`]); None when there was no answer (Envoy's timeout or
    /// reset arrives without headers).
    pub fn on_http_call_response(
        &mut self,
        host: &mut dyn ServiceHost,
        token_id: u32,
        answer: Option<(u32, Option<String>)>,
    ) {
        if !self.awaits(token_id) {
            return;
        }
        self.in_flight = None;
        let result = answer
            .as_ref()
            .map_or(BatchResult::Failed, |(s, _)| BatchResult::Status(*s));
        let now = self.now(host);
        let outcome = self.shipper.on_result(result, now);
        self.account(host, outcome, answer);
        self.pump(host, now);
    }

    /// Sends the next batch if one is due and none is in flight.
    fn pump(&mut self, host: &mut dyn ServiceHost, now: u64) {
        host.set_gauge(BUFFERED, self.shipper.buffered() as u64);
        if self.in_flight.is_some() {
            return;
        }
        let Some(token) = self.token.as_deref() else {
            return;
        };
        let Some(batch) = self.shipper.next_batch(now) else {
            return;
        };
        let auth = format!("Bearer {token}");
        // How far this stream's chain reaches, records still buffered behind this batch
        // included: the collector keeps it, so records this shipper never delivers (Envoy
        // restarted with them buffered) show in `verify` as UNDELIVERED (docs/audit.md §7).
        let chained = self.shipper.last_seq().to_string();
        let headers = [
            (":method", "POST"),
            (":path", self.cfg.path.as_str()),
            (":authority", self.cfg.authority.as_str()),
            ("authorization", auth.as_str()),
            ("content-type", "application/x-ndjson"),
            (CHAINED_HEADER, chained.as_str()),
        ];
        let call = HttpCall {
            cluster: &self.cfg.cluster,
            headers: &headers,
            body: &batch.body,
            timeout_ms: self.cfg.timeout_ms,
        };
        match host.dispatch_http(&call) {
            Ok(token_id) => self.in_flight = Some(token_id),
            Err(status) => {
                host.log(
                    Level::Warn,
                    &format!(
                        "aura-guard audit: dispatch to cluster {} failed: {status}",
                        self.cfg.cluster
                    ),
                );
                let outcome = self.shipper.on_result(BatchResult::Failed, now);
                self.account(host, outcome, None);
            }
        }
    }

    fn account(
        &mut self,
        host: &mut dyn ServiceHost,
        outcome: Outcome,
        answer: Option<(u32, Option<String>)>,
    ) {
        let what = match &answer {
            Some((s, Some(d))) => format!("status {s}: {d}"),
            Some((s, None)) => format!("status {s}"),
            None => "no answer (timeout, reset or unreachable)".to_owned(),
        };
        match outcome {
            Outcome::Shipped { records } => {
                add(host, BATCHES_SHIPPED, 1);
                add(host, RECORDS_SHIPPED, records as u64);
            }
            Outcome::Retry { delay_ms } => {
                add(host, BATCHES_FAILED, 1);
                // Refusals are bounded (a poison batch must not wedge the pipeline); say
                // how close this batch is to being dropped.
                let attempt = match self.shipper.refusals() {
                    0 => String::new(),
                    n => format!(" (refused {n} of at most {} times)", self.cfg.max_attempts),
                };
                host.log(
                    Level::Warn,
                    &format!(
                        "aura-guard audit: batch failed ({what}); retry in {delay_ms} ms{attempt}, {} records buffered",
                        self.shipper.buffered()
                    ),
                );
            }
            Outcome::GaveUp { records, status: _ } => {
                add(host, BATCHES_FAILED, 1);
                add(host, BATCHES_REJECTED, 1);
                add(host, DROPPED, records as u64);
                host.log(
                    Level::Error,
                    &format!(
                        "aura-guard audit: batch of {records} records failed {} times ({what}); \
                         dropped, gap recorded",
                        self.cfg.max_attempts
                    ),
                );
            }
            Outcome::Rejected { records } => {
                add(host, BATCHES_REJECTED, 1);
                add(host, DROPPED, records as u64);
                host.log(
                    Level::Error,
                    &format!(
                        "aura-guard audit: batch of {records} records refused ({what}); dropped, gap recorded"
                    ),
                );
            }
            Outcome::Unexpected => {}
        }
        host.set_gauge(BUFFERED, self.shipper.buffered() as u64);
    }
}

#[cfg(test)]
pub mod mock {
    //! An in-memory service host for unit tests of the loop.
    use super::{HttpCall, ServiceHost};
    use crate::host::Level;
    use std::collections::{BTreeMap, VecDeque};

    /// A call the service dispatched.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SentCall {
        pub cluster: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        pub timeout_ms: u64,
        pub token: u32,
    }

    /// The id the mock gives the registered queue.
    pub const QUEUE_ID: u32 = 7;

    #[derive(Debug, Default)]
    pub struct MockServiceHost {
        pub now_ms: u64,
        pub monotonic_ms: Option<u64>,
        pub logs: Vec<(Level, String)>,
        pub env: BTreeMap<String, String>,
        /// None: the host has no randomness.
        pub random: Option<[u8; 4]>,
        /// The registered queue's name.
        pub queue_name: Option<String>,
        /// Items waiting on the registered queue.
        pub queue: VecDeque<Vec<u8>>,
        pub tick_period_ms: Option<u64>,
        pub calls: Vec<SentCall>,
        pub counters: BTreeMap<String, u64>,
        pub gauges: BTreeMap<String, u64>,
        pub register_fails: bool,
        pub tick_fails: bool,
        pub dequeue_fails: bool,
        pub dispatch_fails: bool,
    }

    impl MockServiceHost {
        pub fn counter(&self, name: &str) -> u64 {
            self.counters.get(name).copied().unwrap_or(0)
        }

        pub fn logged(&self, level: Level, text: &str) -> bool {
            self.logs
                .iter()
                .any(|(l, m)| *l == level && m.contains(text))
        }
    }

    impl ServiceHost for MockServiceHost {
        fn now_ms(&self) -> u64 {
            self.now_ms
        }
        fn monotonic_ms(&self) -> Option<u64> {
            self.monotonic_ms
        }
        fn log(&mut self, level: Level, message: &str) {
            self.logs.push((level, message.to_string()));
        }
        fn random4(&mut self) -> Option<[u8; 4]> {
            self.random
        }
        fn env_var(&self, name: &str) -> Option<String> {
            self.env.get(name).cloned()
        }
        fn register_queue(&mut self, name: &str) -> Result<u32, String> {
            if self.register_fails {
                return Err("InternalFailure".into());
            }
            self.queue_name = Some(name.to_string());
            Ok(QUEUE_ID)
        }
        fn set_tick_period_ms(&mut self, period_ms: u64) -> Result<(), String> {
            if self.tick_fails {
                return Err("InternalFailure".into());
            }
            self.tick_period_ms = Some(period_ms);
            Ok(())
        }
        fn dequeue(&mut self, queue_id: u32) -> Result<Option<Vec<u8>>, String> {
            if self.dequeue_fails || queue_id != QUEUE_ID {
                return Err("NotFound".into());
            }
            Ok(self.queue.pop_front())
        }
        fn dispatch_http(&mut self, call: &HttpCall<'_>) -> Result<u32, String> {
            if self.dispatch_fails {
                return Err("BadArgument".into());
            }
            let token = u32::try_from(self.calls.len())
                .unwrap_or(u32::MAX)
                .saturating_add(100);
            self.calls.push(SentCall {
                cluster: call.cluster.to_string(),
                headers: call
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: call.body.to_vec(),
                timeout_ms: call.timeout_ms,
                token,
            });
            Ok(token)
        }
        fn add_counter(&mut self, name: &'static str, n: u64) {
            *self.counters.entry(name.to_string()).or_default() += n;
        }
        fn set_gauge(&mut self, name: &'static str, value: u64) {
            self.gauges.insert(name.to_string(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::mock::{MockServiceHost, SentCall, QUEUE_ID};
    use super::*;
    use crate::audit::shipper::test_entry as entry;
    use serde_json::{json, Value};

    const TOKEN: &str = "collector-token-0123456789";
    const T0: u64 = 1_764_384_000_000;
    /// The mock's monotonic clock at the start (any origin).
    const MONO0: u64 = 5_000;

    fn host() -> MockServiceHost {
        let mut h = MockServiceHost {
            now_ms: T0,
            monotonic_ms: Some(MONO0),
            random: Some([0xa1, 0xb2, 0xc3, 0xd4]),
            ..MockServiceHost::default()
        };
        h.env.insert(TOKEN_ENV.into(), TOKEN.into());
        h
    }

    /// A configured service with a small buffer and back-off, as in the shipper's tests.
    fn service(h: &mut MockServiceHost, batch: usize, buffer: usize) -> AuditService {
        let cfg = json!({
            "batch_size": batch,
            "max_buffer_records": buffer,
            "flush_interval_ms": 1000,
            "initial_backoff_ms": 100,
            "max_backoff_ms": 1000,
        });
        AuditService::configure(h, cfg.to_string().as_bytes()).unwrap()
    }

    /// Puts entries `ns` on the queue and signals it.
    fn enqueue(s: &mut AuditService, h: &mut MockServiceHost, ns: std::ops::Range<u64>) {
        for n in ns {
            h.queue.push_back(entry(n));
        }
        s.on_queue_ready(h, QUEUE_ID);
    }

    /// Lets `ms` pass (on both clocks), then the timer fires.
    fn tick_after(s: &mut AuditService, h: &mut MockServiceHost, ms: u64) {
        h.now_ms += ms;
        h.monotonic_ms = h.monotonic_ms.map(|m| m + ms);
        s.on_tick(h);
    }

    fn lines(call: &SentCall) -> Vec<Value> {
        std::str::from_utf8(&call.body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn seqs(call: &SentCall) -> Vec<u64> {
        lines(call)
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect()
    }

    fn last_token(h: &MockServiceHost) -> u32 {
        h.calls.last().unwrap().token
    }

    fn answer(s: &mut AuditService, h: &mut MockServiceHost, status: u32, body: Option<&str>) {
        let token = last_token(h);
        s.on_http_call_response(h, token, Some((status, body.map(str::to_owned))));
    }

    fn no_token_in_logs(h: &MockServiceHost) {
        assert!(
            h.logs.iter().all(|(_, m)| !m.contains(TOKEN)),
            "{:?}",
            h.logs
        );
    }

    #[test]
    fn configure_registers_the_queue_sets_the_tick_and_names_the_stream() {
        let mut h = host();
        let s = AuditService::configure(&mut h, b"").unwrap();
        assert_eq!(h.queue_name.as_deref(), Some("aura_guard_audit"));
        assert_eq!(h.tick_period_ms, Some(200));
        assert!(!s.awaits(100));
        assert_eq!(
            h.logs,
            [(
                Level::Info,
                "aura-guard audit: shipper ready: stream aura-guard-1764384000000-a1b2c3d4, \
                 cluster audit_collector, queue aura_guard_audit, batch 100 / 1000 ms, buffer 10000"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn without_randomness_the_stream_id_falls_back_to_the_clock() {
        let mut h = host();
        h.random = None;
        AuditService::configure(&mut h, b"").unwrap();
        let clock = hex::encode((T0 as u32).to_le_bytes());
        assert!(
            h.logged(Level::Info, &format!("stream aura-guard-{T0}-{clock},")),
            "{:?}",
            h.logs
        );
    }

    #[test]
    fn an_invalid_shipper_configuration_is_refused_naming_the_field() {
        let mut h = host();
        assert!(AuditService::configure(&mut h, br#"{"batch_size": 0}"#).is_none());
        assert!(h.logged(
            Level::Error,
            "aura-guard audit: invalid configuration: audit_shipper.batch_size: must be greater than 0"
        ));
        assert_eq!(h.queue_name, None, "nothing registered");
    }

    #[test]
    fn a_short_token_is_refused_without_being_logged() {
        let mut h = host();
        h.env.insert(TOKEN_ENV.into(), "short-secret".into());
        assert!(AuditService::configure(&mut h, b"").is_none());
        assert!(h.logged(
            Level::Error,
            "aura-guard audit: invalid configuration: AUDIT_COLLECTOR_TOKEN: must be at least 16 characters"
        ));
        assert!(h.logs.iter().all(|(_, m)| !m.contains("short-secret")));
    }

    #[test]
    fn host_failures_at_configure_time_refuse_the_configuration() {
        let mut h = host();
        h.register_fails = true;
        assert!(AuditService::configure(&mut h, b"").is_none());
        assert!(h.logged(
            Level::Error,
            "aura-guard audit: register_shared_queue failed: InternalFailure"
        ));

        let mut h = host();
        h.tick_fails = true;
        assert!(AuditService::configure(&mut h, b"").is_none());
        assert!(h.logged(
            Level::Error,
            "aura-guard audit: set_tick_period failed: InternalFailure"
        ));
    }

    #[test]
    fn without_a_token_records_are_dropped_and_counted_and_nothing_is_sent() {
        for token in [None, Some("")] {
            let mut h = host();
            h.env.clear();
            if let Some(t) = token {
                h.env.insert(TOKEN_ENV.into(), t.into());
            }
            let mut s = service(&mut h, 1, 10);
            assert!(h.logged(
                Level::Error,
                "aura-guard audit: AUDIT_COLLECTOR_TOKEN is not set: audit records cannot be \
                 shipped and are dropped (counted in aura_guard.audit.dropped)"
            ));
            enqueue(&mut s, &mut h, 0..3);
            tick_after(&mut s, &mut h, 60_000);
            assert_eq!(h.counter("aura_guard.audit.dropped"), 3);
            assert!(h.calls.is_empty());
            assert!(h.queue.is_empty(), "the queue is drained all the same");
        }
    }

    #[test]
    fn queued_records_are_offered_and_a_full_batch_is_posted_at_once() {
        let mut h = host();
        let mut s = service(&mut h, 2, 10);
        enqueue(&mut s, &mut h, 0..2);
        assert!(h.queue.is_empty());
        assert_eq!(h.calls.len(), 1);
        let call = &h.calls[0];
        assert_eq!(call.cluster, "audit_collector");
        assert_eq!(call.timeout_ms, 5000);
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                (":method", "POST"),
                (":path", "/v1/batches"),
                (":authority", "audit-collector"),
                ("authorization", "Bearer collector-token-0123456789"),
                ("content-type", "application/x-ndjson"),
                ("x-aura-audit-chained", "2"),
            ]
        );
        assert_eq!(seqs(call), [1, 2]);
        assert_eq!(lines(call)[1]["request_body"], json!({"n": 1}));
        assert!(s.awaits(call.token));
        assert_eq!(h.gauges["aura_guard.audit.buffered"], 2);
        no_token_in_logs(&h);
    }

    #[test]
    fn a_partial_batch_leaves_on_the_tick_once_its_oldest_record_waited_the_flush_interval() {
        let mut h = host();
        let mut s = service(&mut h, 100, 1000);
        enqueue(&mut s, &mut h, 0..3);
        assert!(h.calls.is_empty(), "not full, not old");
        tick_after(&mut s, &mut h, 999);
        assert!(h.calls.is_empty());
        tick_after(&mut s, &mut h, 1);
        assert_eq!(h.calls.len(), 1);
        assert_eq!(seqs(&h.calls[0]), [1, 2, 3]);
    }

    #[test]
    fn nothing_is_dispatched_while_a_batch_is_in_flight() {
        let mut h = host();
        let mut s = service(&mut h, 1, 10);
        enqueue(&mut s, &mut h, 0..2);
        assert_eq!(h.calls.len(), 1);
        tick_after(&mut s, &mut h, 60_000);
        enqueue(&mut s, &mut h, 2..4);
        assert_eq!(h.calls.len(), 1, "one batch in flight at a time");
        assert_eq!(h.gauges["aura_guard.audit.buffered"], 4);
    }

    #[test]
    fn a_200_counts_the_batch_and_its_records_and_sends_the_next_batch() {
        let mut h = host();
        let mut s = service(&mut h, 2, 10);
        enqueue(&mut s, &mut h, 0..3);
        answer(&mut s, &mut h, 200, None);
        assert_eq!(h.counter("aura_guard.audit.batches_shipped"), 1);
        assert_eq!(h.counter("aura_guard.audit.records_shipped"), 2);
        assert_eq!(h.gauges["aura_guard.audit.buffered"], 1);
        assert!(h.logs.iter().all(|(l, _)| *l == Level::Info));
        // The remaining record is a partial batch: it leaves once it waited the interval.
        assert_eq!(h.calls.len(), 1);
        tick_after(&mut s, &mut h, 1000);
        assert_eq!(h.calls.len(), 2);
        assert_eq!(seqs(&h.calls[1]), [3]);
    }

    #[test]
    fn every_batch_announces_how_far_the_chain_reaches_records_behind_it_included() {
        let mut h = host();
        let mut s = service(&mut h, 2, 10);
        enqueue(&mut s, &mut h, 0..2);
        enqueue(&mut s, &mut h, 2..5);
        let chained = |c: &SentCall| {
            c.headers
                .iter()
                .find(|(k, _)| k == CHAINED_HEADER)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(seqs(&h.calls[0]), [1, 2]);
        assert_eq!(
            chained(&h.calls[0]).as_deref(),
            Some("2"),
            "sent before 3..5 came"
        );
        answer(&mut s, &mut h, 503, None);
        tick_after(&mut s, &mut h, 100);
        assert_eq!(seqs(&h.calls[1]), [1, 2]);
        assert_eq!(chained(&h.calls[1]).as_deref(), Some("5"));
    }

    #[test]
    fn the_next_full_batch_follows_a_200_at_once() {
        let mut h = host();
        let mut s = service(&mut h, 1, 10);
        enqueue(&mut s, &mut h, 0..2);
        answer(&mut s, &mut h, 200, None);
        assert_eq!(h.calls.len(), 2);
        assert_eq!(seqs(&h.calls[1]), [2]);
        assert!(s.awaits(h.calls[1].token));
        assert!(!s.awaits(h.calls[0].token));
    }

    #[test]
    fn a_503_is_retried_with_the_same_bytes_on_the_tick_after_the_backoff() {
        let mut h = host();
        let mut s = service(&mut h, 1, 10);
        enqueue(&mut s, &mut h, 0..1);
        answer(
            &mut s,
            &mut h,
            503,
            Some(r#"{"error":"storage unavailable"}"#),
        );
        assert_eq!(h.counter("aura_guard.audit.batches_failed"), 1);
        assert!(h.logged(
            Level::Warn,
            r#"aura-guard audit: batch failed (status 503: {"error":"storage unavailable"}); retry in 100 ms, 1 records buffered"#
        ));
        assert_eq!(h.calls.len(), 1, "not before the back-off");
        tick_after(&mut s, &mut h, 99);
        assert_eq!(h.calls.len(), 1);
        tick_after(&mut s, &mut h, 1);
        assert_eq!(h.calls.len(), 2);
        assert_eq!(h.calls[1].body, h.calls[0].body, "same bytes");
        // The back-off doubles.
        answer(&mut s, &mut h, 503, None);
        assert!(h.logged(
            Level::Warn,
            "aura-guard audit: batch failed (status 503); retry in 200 ms"
        ));
        no_token_in_logs(&h);
    }

    #[test]
    fn no_answer_is_a_failure_retried_after_the_backoff() {
        let mut h = host();
        let mut s = service(&mut h, 1, 10);
        enqueue(&mut s, &mut h, 0..1);
        let token = last_token(&h);
        s.on_http_call_response(&mut h, token, None);
        assert_eq!(h.counter("aura_guard.audit.batches_failed"), 1);
        assert!(h.logged(
            Level::Warn,
            "aura-guard audit: batch failed (no answer (timeout, reset or unreachable)); retry in 100 ms, 1 records buffered"
        ));
        tick_after(&mut s, &mut h, 100);
        assert_eq!(h.calls.len(), 2);
        assert_eq!(h.calls[1].body, h.calls[0].body);
    }

    #[test]
    fn a_failed_dispatch_is_logged_counted_and_retried_after_the_backoff() {
        let mut h = host();
        h.dispatch_fails = true;
        let mut s = service(&mut h, 1, 10);
        enqueue(&mut s, &mut h, 0..1);
        assert!(h.logged(
            Level::Warn,
            "aura-guard audit: dispatch to cluster audit_collector failed: BadArgument"
        ));
        assert!(h.logged(
            Level::Warn,
            "aura-guard audit: batch failed (no answer (timeout, reset or unreachable)); retry in 100 ms"
        ));
        assert_eq!(h.counter("aura_guard.audit.batches_failed"), 1);
        h.dispatch_fails = false;
        tick_after(&mut s, &mut h, 99);
        assert!(h.calls.is_empty());
        tick_after(&mut s, &mut h, 1);
        assert_eq!(h.calls.len(), 1);
        assert_eq!(seqs(&h.calls[0]), [1]);
    }

    #[test]
    fn a_400_drops_the_batch_and_the_next_batch_states_the_gap() {
        let mut h = host();
        let mut s = service(&mut h, 2, 10);
        enqueue(&mut s, &mut h, 0..2);
        answer(
            &mut s,
            &mut h,
            400,
            Some(r#"{"error":"line 1: ts: not RFC 3339","line":1}"#),
        );
        assert_eq!(h.counter("aura_guard.audit.batches_rejected"), 1);
        assert_eq!(h.counter("aura_guard.audit.dropped"), 2);
        assert_eq!(h.counter("aura_guard.audit.batches_failed"), 0);
        assert!(h.logged(
            Level::Error,
            r#"aura-guard audit: batch of 2 records refused (status 400: {"error":"line 1: ts: not RFC 3339","line":1}); dropped, gap recorded"#
        ));
        tick_after(&mut s, &mut h, 1000);
        assert_eq!(h.calls.len(), 2);
        let gap = &lines(&h.calls[1])[0];
        assert_eq!(gap["seq"], 3);
        assert_eq!(gap["kind"], "gap");
        assert_eq!(
            gap["metadata"],
            json!({"dropped": 2, "reason": "rejected_400"})
        );
    }

    #[test]
    fn a_poison_batch_is_dropped_after_max_attempts_and_the_records_behind_it_ship() {
        // The collector answers 500 (or 401) to one batch every time: before the bound it was
        // retried forever and nothing behind it ever shipped.
        for status in [500, 401] {
            let mut h = host();
            let cfg = json!({"batch_size": 2, "max_buffer_records": 10, "flush_interval_ms": 1000,
                             "initial_backoff_ms": 100, "max_backoff_ms": 1000,
                             "max_attempts": 3});
            let mut s = AuditService::configure(&mut h, cfg.to_string().as_bytes()).unwrap();
            enqueue(&mut s, &mut h, 0..4);
            let poison = h.calls[0].body.clone();
            let detail = r#"{"error":"internal"}"#;
            answer(&mut s, &mut h, status, Some(detail));
            assert!(h.logged(
                Level::Warn,
                &format!(
                    "aura-guard audit: batch failed (status {status}: {detail}); retry in 100 ms \
                     (refused 1 of at most 3 times), 4 records buffered"
                )
            ));
            tick_after(&mut s, &mut h, 100);
            answer(&mut s, &mut h, status, None);
            tick_after(&mut s, &mut h, 200);
            assert_eq!(h.calls.len(), 3);
            assert!(h.calls.iter().all(|c| c.body == poison));
            answer(&mut s, &mut h, status, None);
            assert!(h.logged(
                Level::Error,
                &format!(
                    "aura-guard audit: batch of 2 records failed 3 times (status {status}); \
                     dropped, gap recorded"
                )
            ));
            assert_eq!(h.counter("aura_guard.audit.batches_failed"), 3);
            assert_eq!(h.counter("aura_guard.audit.batches_rejected"), 1);
            assert_eq!(h.counter("aura_guard.audit.dropped"), 2);
            // The next batch leaves at once: the records behind the poison, then the gap.
            assert_eq!(h.calls.len(), 4);
            assert_eq!(seqs(&h.calls[3]), [3, 4]);
            answer(&mut s, &mut h, 200, None);
            tick_after(&mut s, &mut h, 1000);
            let gap = &lines(&h.calls[4])[0];
            assert_eq!(gap["seq"], 5);
            assert_eq!(
                gap["metadata"],
                json!({"dropped": 2, "reason": format!("retries_exhausted_{status}")})
            );
            no_token_in_logs(&h);
        }
    }

    #[test]
    fn a_503_is_never_counted_toward_max_attempts() {
        let mut h = host();
        let cfg = json!({"batch_size": 1, "initial_backoff_ms": 100, "max_backoff_ms": 100,
                         "max_attempts": 1});
        let mut s = AuditService::configure(&mut h, cfg.to_string().as_bytes()).unwrap();
        enqueue(&mut s, &mut h, 0..1);
        for _ in 0..20 {
            answer(&mut s, &mut h, 503, None);
            tick_after(&mut s, &mut h, 100);
        }
        assert_eq!(h.calls.len(), 21);
        assert_eq!(h.counter("aura_guard.audit.dropped"), 0);
        assert!(!h.logged(Level::Warn, "refused"));
    }

    #[test]
    fn a_full_buffer_drops_and_counts_new_records_and_a_gap_states_them() {
        let mut h = host();
        let mut s = service(&mut h, 100, 2);
        enqueue(&mut s, &mut h, 0..5);
        assert_eq!(h.counter("aura_guard.audit.dropped"), 3);
        assert_eq!(h.gauges["aura_guard.audit.buffered"], 2);
        tick_after(&mut s, &mut h, 1000);
        assert_eq!(seqs(&h.calls[0]), [1, 2]);
        answer(&mut s, &mut h, 200, None);
        tick_after(&mut s, &mut h, 1000);
        let gap = &lines(&h.calls[1])[0];
        assert_eq!(gap["seq"], 3);
        assert_eq!(
            gap["metadata"],
            json!({"dropped": 3, "reason": "queue_full"})
        );
    }

    #[test]
    fn an_invalid_entry_is_counted_as_dropped_and_invalid() {
        let mut h = host();
        let mut s = service(&mut h, 100, 10);
        h.queue.push_back(b"not json".to_vec());
        s.on_queue_ready(&mut h, QUEUE_ID);
        assert_eq!(h.counter("aura_guard.audit.dropped"), 1);
        assert_eq!(h.counter("aura_guard.audit.invalid"), 1);
    }

    #[test]
    fn a_failed_dequeue_is_logged_and_what_was_taken_is_still_sent() {
        let mut h = host();
        let mut s = service(&mut h, 1, 10);
        h.dequeue_fails = true;
        h.queue.push_back(entry(0));
        s.on_queue_ready(&mut h, QUEUE_ID);
        assert!(h.logged(Level::Warn, "aura-guard audit: dequeue failed: NotFound"));
        assert!(h.calls.is_empty());
        h.dequeue_fails = false;
        s.on_queue_ready(&mut h, QUEUE_ID);
        assert_eq!(h.calls.len(), 1);
    }

    #[test]
    fn other_queues_and_answers_to_other_calls_are_ignored() {
        let mut h = host();
        let mut s = service(&mut h, 1, 10);
        h.queue.push_back(entry(0));
        s.on_queue_ready(&mut h, QUEUE_ID + 1);
        assert_eq!(h.queue.len(), 1, "not drained");
        s.on_queue_ready(&mut h, QUEUE_ID);
        let token = last_token(&h);
        s.on_http_call_response(&mut h, token + 1, Some((200, None)));
        assert!(s.awaits(token));
        assert!(h.counters.is_empty());
    }

    #[test]
    fn a_wall_clock_step_back_moves_no_flush_or_retry_timer() {
        let mut h = host();
        let mut s = service(&mut h, 100, 10);
        enqueue(&mut s, &mut h, 0..3);
        assert!(h.calls.is_empty());
        // An hour back: on the wall clock alone the batch would wait an hour more.
        h.now_ms -= 3_600_000;
        tick_after(&mut s, &mut h, 999);
        assert!(h.calls.is_empty(), "not before the flush interval");
        tick_after(&mut s, &mut h, 1);
        assert_eq!(h.calls.len(), 1);
        assert_eq!(seqs(&h.calls[0]), [1, 2, 3]);
        answer(&mut s, &mut h, 503, None);
        h.now_ms -= 3_600_000;
        tick_after(&mut s, &mut h, 100);
        assert_eq!(h.calls.len(), 2, "the retry leaves after its back-off");
        assert_eq!(h.calls[1].body, h.calls[0].body);
    }

    #[test]
    fn without_a_monotonic_clock_the_wall_clock_times_the_batches_and_no_heartbeat_is_written() {
        let mut h = host();
        h.monotonic_ms = None;
        let mut s = service(&mut h, 100, 10);
        assert!(!h.gauges.contains_key(ALIVE_UNTIL));
        enqueue(&mut s, &mut h, 0..1);
        tick_after(&mut s, &mut h, 1000);
        assert_eq!(h.calls.len(), 1);
        assert!(!h.gauges.contains_key(ALIVE_UNTIL));
        assert_eq!(h.counter("aura_guard.audit.ticks"), 1);
    }

    #[test]
    fn configure_and_every_tick_write_the_heartbeat_and_count_the_tick() {
        let mut h = host();
        let mut s = AuditService::configure(&mut h, b"").unwrap();
        // tick_ms 200: three ticks are less than the 10 s minimum.
        assert_eq!(h.gauges[ALIVE_UNTIL], MONO0 + 10_000);
        assert_eq!(h.counter("aura_guard.audit.ticks"), 0);
        tick_after(&mut s, &mut h, 200);
        assert_eq!(h.gauges[ALIVE_UNTIL], MONO0 + 200 + 10_000);
        assert_eq!(h.counter("aura_guard.audit.ticks"), 1);
        tick_after(&mut s, &mut h, 200);
        assert_eq!(h.counter("aura_guard.audit.ticks"), 2);

        let mut h = host();
        AuditService::configure(&mut h, br#"{"tick_ms": 5000}"#).unwrap();
        assert_eq!(h.gauges[ALIVE_UNTIL], MONO0 + 15_000, "three ticks");
    }

    #[test]
    fn a_worker_enqueues_while_the_heartbeat_holds_and_not_once_it_is_past() {
        assert!(shipper_alive(MONO0 + 10_000, MONO0));
        assert!(shipper_alive(MONO0 + 10_000, MONO0 + 10_000));
        assert!(!shipper_alive(MONO0 + 10_000, MONO0 + 10_001));
        // No heartbeat ever written (no shipper yet, or no monotonic clock): not judged.
        assert!(shipper_alive(0, MONO0 + 1_000_000));
        assert_eq!(alive_for_ms(1), MIN_ALIVE_MS);
        assert_eq!(alive_for_ms(u64::MAX), u64::MAX);
    }

    #[test]
    fn only_a_refusal_s_body_is_read_and_at_most_300_bytes_of_it() {
        assert_eq!(detail_len(Some(400), 50), 50);
        assert_eq!(detail_len(Some(503), 10_000), 300);
        assert_eq!(detail_len(Some(200), 50), 0);
        assert_eq!(detail_len(Some(400), 0), 0);
        assert_eq!(detail_len(None, 50), 0);
    }
}
