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
//!
//! An unexpired key is never dropped to make room: a full set refuses the new delivery
//! ([`Insert::Full`], answered 503 so the provider retries later). docs/webhooks.md#replay-protection.

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

/// What [`ReplaySet::check_and_insert`] did with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// The key was new and is now recorded.
    New,
    /// The key is already recorded and has not expired: a replay.
    Seen,
    /// The key is new but the set holds `max_entries` unexpired keys: nothing was recorded.
    /// Evicting an unexpired key instead would let its delivery be replayed.
    Full,
}

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
    /// entries than `max_entries` (the bound was lowered) keeps them all: it takes no new key
    /// until enough have expired.
    pub fn decode(bytes: &[u8], max_entries: usize) -> Self {
        let mut set = ReplaySet::new(max_entries);
        if let Some(entries) = parse(bytes) {
            set.entries = entries;
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

    /// Drops expired entries, then: [`Insert::Seen`] if `key` is recorded (a replay),
    /// [`Insert::Full`] if the set already holds `max_entries` keys (nothing is evicted),
    /// else records `key` until `now + ttl_s` and answers [`Insert::New`].
    pub fn check_and_insert(&mut self, key: &str, now: i64, ttl_s: i64) -> Insert {
        self.entries.retain(|e| e.expires_at >= now);
        let d = digest(key);
        if self.entries.iter().any(|e| e.digest == d) {
            return Insert::Seen;
        }
        if self.entries.len() >= self.max_entries {
            return Insert::Full;
        }
        self.entries.push(Entry {
            digest: d,
            expires_at: now.saturating_add(ttl_s.max(0)),
        });
        Insert::New
    }

    /// Forgets `key`, e.g. when the upstream failed and the provider will retry the same
    /// delivery. Returns whether it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        let d = digest(key);
        let before = self.entries.len();
        self.entries.retain(|e| e.digest != d);
        self.entries.len() != before
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

/// Records `key` until `now + ttl_s` ([`ReplaySet::check_and_insert`]). The set is written
/// back only when the key was recorded.
pub fn replay_insert(
    host: &mut dyn Host,
    max_entries: usize,
    key: &str,
    now: i64,
    ttl_s: i64,
) -> Result<Insert, ReplayStoreError> {
    update_replay_set(host, max_entries, |set| {
        let answer = set.check_and_insert(key, now, ttl_s);
        (answer, answer == Insert::New)
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

    use Insert::{Full, New, Seen};

    #[test]
    fn duplicate_is_refused_until_it_expires() {
        let mut s = ReplaySet::new(10);
        assert_eq!(s.check_and_insert("stripe:abc", 1000, 300), New);
        assert_eq!(s.check_and_insert("stripe:abc", 1000, 300), Seen);
        assert_eq!(
            s.check_and_insert("stripe:abc", 1300, 300),
            Seen,
            "last second still remembered"
        );
        assert_eq!(s.check_and_insert("stripe:abc", 1301, 300), New, "expired");
        assert_eq!(s.check_and_insert("stripe:other", 1301, 300), New);
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
        assert_eq!(t.check_and_insert("a", 1100, 300), Seen);
        assert_eq!(t.check_and_insert("b", 1100, 300), Seen);
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
    fn a_full_set_refuses_new_keys_and_never_evicts_an_unexpired_one() {
        let mut s = ReplaySet::new(3);
        // (key, now, ttl, answer); a expires after 1100, c after 1200, b after 1300.
        let steps = [
            ("a", 1000, 100, New),
            ("b", 1000, 300, New),
            ("c", 1000, 200, New),
            ("d", 1000, 300, Full),
            // Every recorded key, the one closest to expiry included, is still a replay.
            ("a", 1000, 300, Seen),
            ("b", 1000, 300, Seen),
            ("c", 1000, 300, Seen),
            // Refused, not recorded: still full, still not a replay.
            ("d", 1050, 300, Full),
            // Room again once a key has expired.
            ("d", 1101, 300, New),
            ("a", 1101, 300, Full),
            ("d", 1101, 300, Seen),
        ];
        for (i, (key, now, ttl, answer)) in steps.into_iter().enumerate() {
            assert_eq!(s.check_and_insert(key, now, ttl), answer, "step {i}: {key}");
            assert!(s.len() <= 3);
        }
    }

    #[test]
    fn decode_with_a_lower_bound_keeps_every_entry_and_takes_no_new_key() {
        let mut s = ReplaySet::new(10);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            s.check_and_insert(k, 1000, 100 * (i as i64 + 1));
        }
        let mut t = ReplaySet::decode(&s.encode(), 2);
        assert_eq!(t.len(), 4);
        for k in ["a", "b", "c", "d"] {
            assert_eq!(t.check_and_insert(k, 1000, 1), Seen, "{k}");
        }
        assert_eq!(t.check_and_insert("e", 1000, 1), Full);
        // a, b and c expired: one below the bound.
        assert_eq!(t.check_and_insert("e", 1301, 1), New);
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
        assert_eq!(s.check_and_insert("a", 1000, 300), New);
    }

    #[test]
    fn negative_ttl_is_treated_as_zero() {
        let mut s = ReplaySet::new(10);
        assert_eq!(s.check_and_insert("a", 1000, -50), New);
        assert_eq!(s.check_and_insert("a", 1000, 300), Seen);
        assert_eq!(s.check_and_insert("a", 1001, 300), New);
    }

    #[test]
    fn init_creates_the_store_once() {
        let mut host = crate::host::mock::MockHost::default();
        init_replay_store(&mut host);
        let first = host.shared[REPLAY_SHARED_KEY].clone();
        assert_eq!(
            replay_insert(&mut host, 10, "k", 1_700_000_000, 300).unwrap(),
            New
        );
        init_replay_store(&mut host);
        assert_ne!(host.shared[REPLAY_SHARED_KEY], first, "not reset");
        assert_eq!(
            replay_insert(&mut host, 10, "k", 1_700_000_000, 300).unwrap(),
            Seen
        );
        assert!(replay_remove(&mut host, 10, "k").unwrap());
        assert!(!replay_remove(&mut host, 10, "k").unwrap());
    }

    #[test]
    fn a_full_store_is_not_written() {
        let mut host = crate::host::mock::MockHost::default();
        init_replay_store(&mut host);
        assert_eq!(replay_insert(&mut host, 1, "a", 1000, 300).unwrap(), New);
        let stored = host.shared[REPLAY_SHARED_KEY].clone();
        assert_eq!(replay_insert(&mut host, 1, "b", 1000, 300).unwrap(), Full);
        assert_eq!(host.shared[REPLAY_SHARED_KEY], stored);
        assert_eq!(replay_insert(&mut host, 1, "a", 1000, 300).unwrap(), Seen);
    }
}
