//! Replay protection: a bounded, expiring seen-set serialised to bytes, and its store.
//!
//! The store keeps the bytes in proxy-wasm shared data (through [`Host`]) and updates them
//! with compare-and-swap (get with CAS token, `decode`, `check_and_insert`, `encode`, set with
//! the token; retry on CAS mismatch), so all workers of one Envoy share it. Only truncated
//! SHA-256 digests of the keys are stored: no delivery ids or signatures sit in shared memory.
//!
//! Format (little endian): `b"AGRS"`, version `1u8`, count `u32`, then `count` entries of
//! 16-byte digest + `i64` expiry (unix seconds). Anything else decodes as an empty set: losing
//! the set only reopens the replay window, it must never crash the filter.

use crate::host::{Host, Level, SharedDataError};
use sha2::{Digest, Sha256};

/// Shared-data key of the replay seen-set.
pub const REPLAY_SHARED_KEY: &str = "aura_guard.webhook.replay";
/// Compare-and-swap attempts before the replay store counts as unavailable.
pub const CAS_ATTEMPTS: u32 = 16;
/// Answer when the replay store cannot be updated: the delivery is refused (fail closed) with a
/// status providers retry on.
pub const STORE_ERROR_STATUS: u32 = 503;
pub const STORE_ERROR_MESSAGE: &str = "Webhook replay check unavailable";

/// The replay store could not be read or updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStoreError {
    /// Every compare-and-swap attempt lost a race with another worker.
    Contended,
    /// The host refused a shared-data call.
    Unavailable,
}

const MAGIC: &[u8; 4] = b"AGRS";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 9;
const ENTRY_LEN: usize = 24;

/// Truncated SHA-256 of a replay key: what is stored instead of the key itself.
pub fn digest(key: &str) -> [u8; 16] {
    let full = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(full.iter()) {
        *o = *b;
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    digest: [u8; 16],
    /// Last second at which the key is still remembered.
    expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySet {
    entries: Vec<Entry>,
    max_entries: usize,
}

impl ReplaySet {
    pub fn new(max_entries: usize) -> Self {
        ReplaySet {
            entries: Vec::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// Never fails: missing, truncated or foreign bytes give an empty set. A set with more
    /// entries than `max_entries` (the bound was lowered) keeps the latest-expiring ones.
    pub fn decode(bytes: &[u8], max_entries: usize) -> Self {
        let mut set = ReplaySet::new(max_entries);
        if let Some(entries) = parse(bytes) {
            set.entries = entries;
            set.enforce_bound(0);
        }
        set
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.entries.len() * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for e in self.entries.iter().take(count as usize) {
            out.extend_from_slice(&e.digest);
            out.extend_from_slice(&e.expires_at.to_le_bytes());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired entries; returns `true` if `key` is new (and records it until
    /// `now + ttl_s`), `false` if it was already seen and has not expired (a replay).
    /// At the bound, the entry closest to expiry is evicted to make room.
    pub fn check_and_insert(&mut self, key: &str, now: i64, ttl_s: i64) -> bool {
        self.entries.retain(|e| e.expires_at >= now);
        let d = digest(key);
        if self.entries.iter().any(|e| e.digest == d) {
            return false;
        }
        self.enforce_bound(1);
        self.entries.push(Entry {
            digest: d,
            expires_at: now.saturating_add(ttl_s.max(0)),
        });
        true
    }

    /// Forgets `key`, e.g. when the upstream failed and the provider will retry the same
    /// delivery. Returns whether it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        let d = digest(key);
        let before = self.entries.len();
        self.entries.retain(|e| e.digest != d);
        self.entries.len() != before
    }

    /// Makes room for `extra` more entries.
    fn enforce_bound(&mut self, extra: usize) {
        let limit = self.max_entries.saturating_sub(extra);
        if self.entries.len() > limit {
            // Stable sort keeps insertion order among equal expiries: oldest goes first.
            self.entries.sort_by_key(|e| e.expires_at);
            let excess = self.entries.len() - limit;
            self.entries.drain(..excess);
        }
    }
}

fn parse(bytes: &[u8]) -> Option<Vec<Entry>> {
    let (header, rest) = bytes.split_at_checked(HEADER_LEN)?;
    let (magic, rest_header) = header.split_at_checked(4)?;
    if magic != MAGIC || rest_header.first() != Some(&VERSION) {
        return None;
    }
    let count = u32::from_le_bytes(rest_header.get(1..5)?.try_into().ok()?) as usize;
    if rest.len() != count.checked_mul(ENTRY_LEN)? {
        return None;
    }
    rest.chunks_exact(ENTRY_LEN)
        .map(|chunk| {
            let (d, t) = chunk.split_at_checked(16)?;
            Some(Entry {
                digest: d.try_into().ok()?,
                expires_at: i64::from_le_bytes(t.try_into().ok()?),
            })
        })
        .collect()
}

/// One compare-and-swap update of the seen-set: read with its token, change, write with the
/// token; on a mismatch another worker wrote in between, so read again. `f` returns the
/// caller's answer and whether the set changed (nothing is written when it did not).
fn update_replay_set<T>(
    host: &mut dyn Host,
    max_entries: usize,
    mut f: impl FnMut(&mut ReplaySet) -> (T, bool),
) -> Result<T, ReplayStoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = host
            .get_shared_data(REPLAY_SHARED_KEY)
            .map_err(|_| ReplayStoreError::Unavailable)?;
        let mut set = ReplaySet::decode(bytes.as_deref().unwrap_or(&[]), max_entries);
        let (answer, changed) = f(&mut set);
        if !changed {
            return Ok(answer);
        }
        match host.set_shared_data(REPLAY_SHARED_KEY, &set.encode(), cas) {
            Ok(()) => return Ok(answer),
            Err(SharedDataError::CasMismatch) => continue,
            Err(SharedDataError::Unavailable) => return Err(ReplayStoreError::Unavailable),
        }
    }
    Err(ReplayStoreError::Contended)
}

/// Records `key` until `now + ttl_s`; `Ok(false)` when it is already there (a replay).
pub fn replay_insert(
    host: &mut dyn Host,
    max_entries: usize,
    key: &str,
    now: i64,
    ttl_s: i64,
) -> Result<bool, ReplayStoreError> {
    update_replay_set(host, max_entries, |set| {
        let new = set.check_and_insert(key, now, ttl_s);
        (new, new)
    })
}

/// Forgets `key`; `Ok(false)` when it was not there (expired or evicted meanwhile).
pub fn replay_remove(
    host: &mut dyn Host,
    max_entries: usize,
    key: &str,
) -> Result<bool, ReplayStoreError> {
    update_replay_set(host, max_entries, |set| {
        let removed = set.remove(key);
        (removed, removed)
    })
}

/// Creates the empty seen-set when it does not exist yet. Called when a worker is configured,
/// before it serves requests: a write with a CAS token to a key that does not exist always
/// succeeds, so two workers racing on the very first delivery could otherwise overwrite each
/// other's entry.
pub fn init_replay_store(host: &mut dyn Host) {
    match host.get_shared_data(REPLAY_SHARED_KEY) {
        Ok((Some(_), _)) => {}
        Ok((None, _)) => {
            if let Err(e) =
                host.set_shared_data(REPLAY_SHARED_KEY, &ReplaySet::new(1).encode(), None)
            {
                host.log(
                    Level::Error,
                    &format!("aura-guard: cannot create the webhook replay store: {e:?}"),
                );
            }
        }
        Err(e) => host.log(
            Level::Error,
            &format!("aura-guard: cannot read the webhook replay store: {e:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn duplicate_is_refused_until_it_expires() {
        let mut s = ReplaySet::new(10);
        assert!(s.check_and_insert("stripe:abc", 1000, 300));
        assert!(!s.check_and_insert("stripe:abc", 1000, 300));
        assert!(
            !s.check_and_insert("stripe:abc", 1300, 300),
            "last second still remembered"
        );
        assert!(s.check_and_insert("stripe:abc", 1301, 300), "expired");
        assert!(s.check_and_insert("stripe:other", 1301, 300));
    }

    #[test]
    fn survives_an_encode_decode_round_trip() {
        let mut s = ReplaySet::new(10);
        s.check_and_insert("a", 1000, 300);
        s.check_and_insert("b", 1000, 600);
        let bytes = s.encode();
        assert_eq!(bytes.len(), 9 + 2 * 24);
        let mut t = ReplaySet::decode(&bytes, 10);
        assert_eq!(t, s);
        assert!(!t.check_and_insert("a", 1100, 300));
        assert!(!t.check_and_insert("b", 1100, 300));
    }

    #[test]
    fn stores_only_digests_of_keys() {
        let mut s = ReplaySet::new(10);
        s.check_and_insert("github:delivery-72d3162e", 1000, 300);
        let bytes = s.encode();
        assert!(!bytes.windows(8).any(|w| w == b"delivery"));
        assert!(bytes
            .windows(16)
            .any(|w| w == digest("github:delivery-72d3162e")));
    }

    #[test]
    fn bound_evicts_the_entry_closest_to_expiry() {
        let mut s = ReplaySet::new(3);
        assert!(s.check_and_insert("a", 1000, 100));
        assert!(s.check_and_insert("b", 1000, 300));
        assert!(s.check_and_insert("c", 1000, 200));
        assert!(s.check_and_insert("d", 1000, 300));
        assert_eq!(s.len(), 3);
        assert!(s.check_and_insert("a", 1000, 100), "a was evicted");
        assert!(!s.check_and_insert("b", 1000, 300));
        assert!(!s.check_and_insert("d", 1000, 300));
    }

    #[test]
    fn decode_with_a_lower_bound_keeps_the_latest_expiring() {
        let mut s = ReplaySet::new(10);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            s.check_and_insert(k, 1000, 100 * (i as i64 + 1));
        }
        let mut t = ReplaySet::decode(&s.encode(), 2);
        assert_eq!(t.len(), 2);
        assert!(!t.check_and_insert("d", 1000, 1));
        assert!(!t.check_and_insert("c", 1000, 1));
    }

    #[test]
    fn corrupt_bytes_start_fresh() {
        let mut good = ReplaySet::new(10);
        good.check_and_insert("a", 1000, 300);
        let bytes = good.encode();
        let mut bad_magic = bytes.clone();
        bad_magic[0] = b'X';
        let mut bad_version = bytes.clone();
        bad_version[4] = 9;
        let mut bad_count = bytes.clone();
        bad_count[5] = 2;
        let mut huge_count = bytes.clone();
        huge_count[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            b"AGRS".to_vec(),
            bytes[..bytes.len() - 1].to_vec(),
            [bytes.clone(), vec![0]].concat(),
            bad_magic,
            bad_version,
            bad_count,
            huge_count,
            vec![0xff; 1000],
        ];
        for c in cases {
            let s = ReplaySet::decode(&c, 10);
            assert!(s.is_empty(), "{c:?}");
        }
    }

    #[test]
    fn remove_forgets_a_key() {
        let mut s = ReplaySet::new(10);
        s.check_and_insert("a", 1000, 300);
        assert!(s.remove("a"));
        assert!(!s.remove("a"));
        assert!(s.check_and_insert("a", 1000, 300));
    }

    #[test]
    fn negative_ttl_is_treated_as_zero() {
        let mut s = ReplaySet::new(10);
        assert!(s.check_and_insert("a", 1000, -50));
        assert!(!s.check_and_insert("a", 1000, 300));
        assert!(s.check_and_insert("a", 1001, 300));
    }

    #[test]
    fn init_creates_the_store_once() {
        let mut host = crate::host::mock::MockHost::default();
        init_replay_store(&mut host);
        let first = host.shared[REPLAY_SHARED_KEY].clone();
        assert!(replay_insert(&mut host, 10, "k", 1_700_000_000, 300).unwrap());
        init_replay_store(&mut host);
        assert_ne!(host.shared[REPLAY_SHARED_KEY], first, "not reset");
        assert!(!replay_insert(&mut host, 10, "k", 1_700_000_000, 300).unwrap());
        assert!(replay_remove(&mut host, 10, "k").unwrap());
        assert!(!replay_remove(&mut host, 10, "k").unwrap());
    }
}
