//! The audit shipper's glue: runs in the singleton service VM (bootstrap extension
//! `envoy.bootstrap.wasm`, `singleton: true`, root_id `aura-guard-audit`), one per Envoy. It
//! registers the shared queue the HTTP workers enqueue entries on, feeds them to the pure
//! [`Shipper`], and POSTs the batches it returns to the collector cluster. Every decision
//! (chain, batching, back-off, drops, gaps) is the core's; this file only moves bytes.
//!
//! The bearer token comes from `AUDIT_COLLECTOR_TOKEN` and is never logged.

use aura_guard_core::audit::config::{check_token, ShipperConfig};
use aura_guard_core::audit::shipper::{stream_id, BatchResult, Offer, Outcome, Shipper};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

/// The root_id that makes a root context the shipper.
pub const SERVICE_ROOT_ID: &str = "aura-guard-audit";
const TOKEN_ENV: &str = "AUDIT_COLLECTOR_TOKEN";

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// True in the shipper's VM (decided by the plugin's root_id).
pub fn is_service_root() -> bool {
    matches!(
        hostcalls::get_property(vec!["plugin_root_id"]),
        Ok(Some(ref id)) if id.as_slice() == SERVICE_ROOT_ID.as_bytes()
    )
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

thread_local! {
    static METRICS: RefCell<HashMap<&'static str, u32>> = RefCell::new(HashMap::new());
}

fn metric(name: &'static str, kind: MetricType) -> Option<u32> {
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(id) = m.get(name) {
            return Some(*id);
        }
        match hostcalls::define_metric(kind, name) {
            Ok(id) => {
                m.insert(name, id);
                Some(id)
            }
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("aura-guard audit: define_metric {name} failed: {status:?}"),
                );
                None
            }
        }
    })
}

fn add(name: &'static str, n: u64) {
    if n == 0 {
        return;
    }
    let Some(id) = metric(name, MetricType::Counter) else {
        return;
    };
    let by = i64::try_from(n).unwrap_or(i64::MAX);
    if let Err(status) = hostcalls::increment_metric(id, by) {
        log(
            LogLevel::Warn,
            &format!("aura-guard audit: increment_metric {name} failed: {status:?}"),
        );
    }
}

fn gauge(name: &'static str, value: u64) {
    if let Some(id) = metric(name, MetricType::Gauge) {
        let _ = hostcalls::record_metric(id, value);
    }
}

pub struct AuditService {
    cfg: ShipperConfig,
    shipper: Shipper,
    /// None: no token configured; every record is dropped and counted.
    token: Option<String>,
    queue_id: u32,
    in_flight: Option<u32>,
}

impl AuditService {
    /// `on_configure` of the service root. Errors are logged; false makes Envoy refuse the
    /// configuration.
    pub fn configure(raw: &[u8]) -> Option<AuditService> {
        let cfg = match ShipperConfig::load(raw) {
            Ok(c) => c,
            Err(err) => {
                log(
                    LogLevel::Error,
                    &format!("aura-guard audit: invalid configuration: {err}"),
                );
                return None;
            }
        };
        let token = match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.is_empty() => {
                if let Err(err) = check_token(&t) {
                    log(
                        LogLevel::Error,
                        &format!("aura-guard audit: invalid configuration: {err}"),
                    );
                    return None;
                }
                Some(t)
            }
            _ => {
                log(
                    LogLevel::Error,
                    &format!(
                        "aura-guard audit: {TOKEN_ENV} is not set: audit records cannot be \
                         shipped and are dropped (counted in aura_guard.audit.dropped)"
                    ),
                );
                None
            }
        };
        let queue_id = match hostcalls::register_shared_queue(&cfg.queue_name) {
            Ok(id) => id,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("aura-guard audit: register_shared_queue failed: {status:?}"),
                );
                return None;
            }
        };
        if let Err(status) = hostcalls::set_tick_period(Duration::from_millis(cfg.tick_ms)) {
            log(
                LogLevel::Error,
                &format!("aura-guard audit: set_tick_period failed: {status:?}"),
            );
            return None;
        }
        let mut random = [0u8; 4];
        if getrandom::getrandom(&mut random).is_err() {
            // The start time alone still separates restarts; the random part is extra.
            random = (now_ms() as u32).to_le_bytes();
        }
        let stream = stream_id(&cfg.stream_prefix, now_ms(), random);
        log(
            LogLevel::Info,
            &format!(
                "aura-guard audit: shipper ready: stream {stream}, cluster {}, queue {}, batch {} / {} ms, buffer {}",
                cfg.cluster, cfg.queue_name, cfg.batch_size, cfg.flush_interval_ms, cfg.max_buffer_records
            ),
        );
        Some(AuditService {
            shipper: Shipper::new(cfg.clone(), stream),
            cfg,
            token,
            queue_id,
            in_flight: None,
        })
    }

    pub fn on_queue_ready(&mut self, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        let now = now_ms();
        loop {
            match hostcalls::dequeue_shared_queue(queue_id) {
                Ok(Some(entry)) => {
                    if self.token.is_none() {
                        add("aura_guard.audit.dropped", 1);
                        continue;
                    }
                    match self.shipper.offer(&entry, now) {
                        Offer::Queued => {}
                        Offer::Dropped => add("aura_guard.audit.dropped", 1),
                        Offer::Invalid => {
                            add("aura_guard.audit.dropped", 1);
                            add("aura_guard.audit.invalid", 1);
                        }
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    log(
                        LogLevel::Warn,
                        &format!("aura-guard audit: dequeue failed: {status:?}"),
                    );
                    break;
                }
            }
        }
        self.pump(now);
    }

    pub fn on_tick(&mut self) {
        self.pump(now_ms());
    }

    /// Sends the next batch if one is due and none is in flight.
    fn pump(&mut self, now: u64) {
        gauge("aura_guard.audit.buffered", self.shipper.buffered() as u64);
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
        let headers = vec![
            (":method", "POST"),
            (":path", self.cfg.path.as_str()),
            (":authority", self.cfg.authority.as_str()),
            ("authorization", auth.as_str()),
            ("content-type", "application/x-ndjson"),
        ];
        match hostcalls::dispatch_http_call(
            &self.cfg.cluster,
            headers,
            Some(&batch.body),
            vec![],
            Duration::from_millis(self.cfg.timeout_ms),
        ) {
            Ok(call) => self.in_flight = Some(call),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "aura-guard audit: dispatch to cluster {} failed: {status:?}",
                        self.cfg.cluster
                    ),
                );
                let outcome = self.shipper.on_result(BatchResult::Failed, now);
                self.account(outcome, None);
            }
        }
    }

    /// The collector's answer (or Envoy's timeout/reset, which arrives without headers).
    pub fn on_http_call_response(&mut self, token_id: u32, body_size: usize) {
        if self.in_flight != Some(token_id) {
            return;
        }
        self.in_flight = None;
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok());
        let result = status.map_or(BatchResult::Failed, BatchResult::Status);
        let detail = if status.is_some_and(|s| !(200..300).contains(&s)) && body_size > 0 {
            // The collector's error names a line and a field, never the token.
            hostcalls::get_buffer(
                proxy_wasm::types::BufferType::HttpCallResponseBody,
                0,
                body_size.min(300),
            )
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
        } else {
            None
        };
        let now = now_ms();
        let outcome = self.shipper.on_result(result, now);
        self.account(outcome, status.map(|s| (s, detail)));
        self.pump(now);
    }

    fn account(&mut self, outcome: Outcome, answer: Option<(u32, Option<String>)>) {
        let what = match &answer {
            Some((s, Some(d))) => format!("status {s}: {d}"),
            Some((s, None)) => format!("status {s}"),
            None => "no answer (timeout, reset or unreachable)".to_owned(),
        };
        match outcome {
            Outcome::Shipped { records } => {
                add("aura_guard.audit.batches_shipped", 1);
                add("aura_guard.audit.records_shipped", records as u64);
            }
            Outcome::Retry { delay_ms } => {
                add("aura_guard.audit.batches_failed", 1);
                log(
                    LogLevel::Warn,
                    &format!(
                        "aura-guard audit: batch failed ({what}); retry in {delay_ms} ms, {} records buffered",
                        self.shipper.buffered()
                    ),
                );
            }
            Outcome::Rejected { records } => {
                add("aura_guard.audit.batches_rejected", 1);
                add("aura_guard.audit.dropped", records as u64);
                log(
                    LogLevel::Error,
                    &format!(
                        "aura-guard audit: batch of {records} records refused ({what}); dropped, gap recorded"
                    ),
                );
            }
            Outcome::Unexpected => {}
        }
        gauge("aura_guard.audit.buffered", self.shipper.buffered() as u64);
    }
}
