//! The collector's Prometheus metrics, served on `GET /metrics` (docs/audit.md §5, "Metrics").

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    /// Batches by outcome: `ok`, or the reason it was refused.
    batches: Family<Labels, Counter>,
    /// Records of batches answered 200 (stored now or already stored).
    records_accepted: Counter,
    /// Records written now (files and database).
    records_stored: Counter,
    /// Records already stored (a retry), not written again.
    records_duplicate: Counter,
    /// Records of batches refused, by reason (0 for a batch refused before it was parsed).
    records_rejected: Family<Labels, Counter>,
    /// Database calls that failed or missed their deadline.
    db_errors: Counter,
    /// File append + database commit of a batch with new records, in seconds.
    write_seconds: Histogram,
    /// Rows and files deleted by retention.
    retention_deleted: Family<Labels, Counter>,
}

/// Why a batch was refused: the `reason` label.
#[derive(Clone, Copy)]
pub enum Reason {
    Unauthorized,
    UnsupportedMediaType,
    TooLarge,
    Invalid,
    Conflict,
    StorageUnavailable,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Unauthorized => "unauthorized",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::TooLarge => "too_large",
            Reason::Invalid => "invalid",
            Reason::Conflict => "conflict",
            Reason::StorageUnavailable => "storage_unavailable",
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("aura_collector");
        let batches = Family::<Labels, Counter>::default();
        let records_accepted = Counter::default();
        let records_stored = Counter::default();
        let records_duplicate = Counter::default();
        let records_rejected = Family::<Labels, Counter>::default();
        let db_errors = Counter::default();
        // 1 ms .. ~16 s: an fsync on a quiet disk up to a database at its timeout.
        let write_seconds = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let retention_deleted = Family::<Labels, Counter>::default();
        registry.register(
            "batches",
            "Batches received, by result (ok or the reason of the refusal)",
            batches.clone(),
        );
        registry.register(
            "records_accepted",
            "Records in batches answered 200 (stored now or already stored)",
            records_accepted.clone(),
        );
        registry.register(
            "records_stored",
            "Records written to the files and the database",
            records_stored.clone(),
        );
        registry.register(
            "records_duplicate",
            "Records already stored, received again (a retry)",
            records_duplicate.clone(),
        );
        registry.register(
            "records_rejected",
            "Records in refused batches, by reason (batches refused before parsing count 0)",
            records_rejected.clone(),
        );
        registry.register(
            "db_errors",
            "Database calls that failed or got no answer within the timeout",
            db_errors.clone(),
        );
        registry.register(
            "write_seconds",
            "File append plus database commit of a batch with new records",
            write_seconds.clone(),
        );
        registry.register(
            "retention_deleted",
            "Audit files and database rows deleted by retention",
            retention_deleted.clone(),
        );
        Metrics {
            registry,
            batches,
            records_accepted,
            records_stored,
            records_duplicate,
            records_rejected,
            db_errors,
            write_seconds,
            retention_deleted,
        }
    }

    pub fn batch_ok(&self, stored: usize, duplicates: usize) {
        self.batches.get_or_create(&vec![("result", "ok")]).inc();
        let stored = u64::try_from(stored).unwrap_or(u64::MAX);
        let duplicates = u64::try_from(duplicates).unwrap_or(u64::MAX);
        self.records_stored.inc_by(stored);
        self.records_duplicate.inc_by(duplicates);
        self.records_accepted
            .inc_by(stored.saturating_add(duplicates));
    }

    pub fn batch_refused(&self, reason: Reason, records: usize) {
        let labels = vec![("result", reason.label())];
        self.batches.get_or_create(&labels).inc();
        self.records_rejected
            .get_or_create(&vec![("reason", reason.label())])
            .inc_by(u64::try_from(records).unwrap_or(u64::MAX));
    }

    pub fn db_error(&self) {
        self.db_errors.inc();
    }

    pub fn write_took(&self, d: std::time::Duration) {
        self.write_seconds.observe(d.as_secs_f64());
    }

    pub fn retention(&self, store: &'static str, n: u64) {
        self.retention_deleted
            .get_or_create(&vec![("store", store)])
            .inc_by(n);
    }

    /// The text exposition format (version 0.0.4 compatible).
    pub fn render(&self) -> Result<String, String> {
        let mut out = String::new();
        encode(&mut out, &self.registry).map_err(|e| format!("metrics: {e}"))?;
        Ok(out)
    }
}
