//! Hash-chain verification over stored lines (from the DB or the files).

use std::collections::BTreeMap;

use aura_guard_core::audit::format::line_hash;

use crate::db::Pruned;
use crate::record::{parse_line, Record};

/// Outcome of a verification: report lines (in order) and the number of problems.
pub struct Report {
    pub lines: Vec<String>,
    pub problems: usize,
    pub records: usize,
    pub streams: usize,
}

struct Entry {
    loc: String,
    rec: Record,
}

/// What a shipper last announced about its stream (the DB's `audit_streams`): the last seq
/// it had chained, when, and whether that is older than the grace period.
pub struct Announced {
    pub chained_seq: u64,
    pub seen_at: String,
    pub stale: bool,
}

/// Checks every stream's chain. `items` are (location, line) pairs; a location
/// is what the report prints to say where (e.g. `audit-2026-01-02.jsonl:12`).
/// `allow_missing_start`: a stream may begin after seq 1 (files deleted by retention).
/// `announced`: per stream, how far its shipper said the chain reaches; records past the
/// last one stored are UNDELIVERED (a problem) once the announcement is stale, PENDING
/// (informational: still on their way) before.
/// `pruned`: per stream, where retention cut it (the DB's `audit_pruned`): the chain then
/// starts after that seq, from that hash (`PRUNED`, informational), and a stream all of whose
/// rows were deleted is reported, not missing.
pub fn verify(
    items: Vec<(String, String)>,
    allow_missing_start: bool,
    announced: &BTreeMap<String, Announced>,
    pruned: &BTreeMap<String, Pruned>,
) -> Report {
    let mut out = Vec::new();
    let mut problems = 0usize;
    let mut records = 0usize;
    let mut streams: BTreeMap<String, BTreeMap<u64, Vec<Entry>>> = BTreeMap::new();
    for (loc, line) in items {
        match parse_line(&line) {
            Ok(rec) => {
                records = records.saturating_add(1);
                streams
                    .entry(rec.stream.clone())
                    .or_default()
                    .entry(rec.seq)
                    .or_default()
                    .push(Entry { loc, rec });
            }
            Err(e) => {
                problems = problems.saturating_add(1);
                out.push(format!("BAD_LINE {loc}: {e}"));
            }
        }
    }
    let stream_count = streams.len();
    for (stream, seqs) in &streams {
        let mut sp = 0usize;
        let mut prev: Option<(u64, &Entry)> = None;
        let mut count = 0usize;
        let cut = pruned.get(stream);
        if let Some(p) = cut {
            out.push(format!(
                "PRUNED stream={stream} seq=1..{}: deleted by retention; the chain goes on from hash {}",
                p.seq, p.hash
            ));
        }
        for (seq, entries) in seqs {
            count = count.saturating_add(entries.len());
            let Some(first) = entries.first() else {
                continue;
            };
            // Several copies of one seq: identical copies come from a retried
            // batch whose DB commit failed after the file append; anything
            // else is a fork of the chain.
            if entries.len() > 1 {
                let locs: Vec<&str> = entries.iter().map(|e| e.loc.as_str()).collect();
                if entries.iter().all(|e| e.rec.line == first.rec.line) {
                    out.push(format!(
                        "DUPLICATE stream={stream} seq={seq}: identical copies at {}",
                        locs.join(", ")
                    ));
                } else {
                    sp = sp.saturating_add(1);
                    out.push(format!(
                        "FORK stream={stream} seq={seq}: different records at {}",
                        locs.join(", ")
                    ));
                }
            }
            match prev {
                // After retention's cut: the first record must follow the last one deleted.
                None if cut.is_some_and(|p| p.seq < *seq) => {
                    let (pseq, phash) = cut.map(|p| (p.seq, p.hash.as_str())).unwrap_or((0, ""));
                    if *seq != pseq.saturating_add(1) {
                        sp = sp.saturating_add(1);
                        out.push(format!(
                            "MISSING stream={stream} seq={}..{} (after the retention cut at seq {pseq}, before seq {seq} at {})",
                            pseq.saturating_add(1),
                            seq.saturating_sub(1),
                            first.loc
                        ));
                    } else {
                        for e in entries {
                            if e.rec.prev_hash != phash {
                                sp = sp.saturating_add(1);
                                out.push(format!(
                                    "HASH_BREAK stream={stream} seq={seq} at {}: prev_hash={} but the retention cut recorded seq {pseq} with hash {phash} (seq {seq} was altered)",
                                    e.loc, e.rec.prev_hash
                                ));
                            }
                        }
                    }
                }
                None if *seq != 1 => {
                    let msg = format!(
                        "stream={stream} seq=1..{} missing (first record is seq {seq} at {})",
                        seq.saturating_sub(1),
                        first.loc
                    );
                    if allow_missing_start {
                        out.push(format!("START {msg}"));
                    } else {
                        sp = sp.saturating_add(1);
                        out.push(format!("MISSING {msg}"));
                    }
                }
                None => {}
                Some((pseq, pentry)) => {
                    if *seq != pseq.saturating_add(1) {
                        sp = sp.saturating_add(1);
                        out.push(format!(
                            "MISSING stream={stream} seq={}..{} (after seq {pseq} at {}, before seq {seq} at {})",
                            pseq.saturating_add(1),
                            seq.saturating_sub(1),
                            pentry.loc,
                            first.loc
                        ));
                    } else {
                        let expected = line_hash(pentry.rec.line.as_bytes());
                        for e in entries {
                            if e.rec.prev_hash != expected {
                                sp = sp.saturating_add(1);
                                out.push(format!(
                                    "HASH_BREAK stream={stream} seq={seq} at {}: prev_hash={} but sha256 of seq {pseq} at {} is {expected} (seq {pseq} or seq {seq} was altered)",
                                    e.loc, e.rec.prev_hash, pentry.loc
                                ));
                            }
                        }
                    }
                }
            }
            for e in entries {
                if let Some((dropped, reason)) = &e.rec.gap {
                    sp = sp.saturating_add(1);
                    out.push(format!(
                        "GAP stream={stream} seq={seq} at {}: shipper dropped {dropped} records (reason: {reason})",
                        e.loc
                    ));
                }
            }
            prev = Some((*seq, first));
        }
        let first_seq = seqs.keys().next().copied().unwrap_or(0);
        let last_seq = seqs.keys().next_back().copied().unwrap_or(0);
        let last_known = last_seq.max(cut.map_or(0, |p| p.seq));
        if let Some(line) = undelivered(stream, last_known, announced.get(stream)) {
            if line.starts_with("UNDELIVERED") {
                sp = sp.saturating_add(1);
            }
            out.push(line);
        }
        if sp == 0 {
            out.push(format!(
                "OK stream={stream} records={count} seq={first_seq}..{last_seq}"
            ));
        } else {
            out.push(format!(
                "FAILED stream={stream} records={count} seq={first_seq}..{last_seq} problems={sp}"
            ));
        }
        problems = problems.saturating_add(sp);
    }
    // Streams whose rows retention deleted, all of them.
    for (stream, p) in pruned {
        if !streams.contains_key(stream) {
            out.push(format!(
                "PRUNED stream={stream} seq=1..{}: deleted by retention; the chain goes on from hash {}",
                p.seq, p.hash
            ));
        }
    }
    // Streams whose shipper announced records but none of them was ever stored.
    for (stream, a) in announced {
        if !streams.contains_key(stream) {
            let last = pruned.get(stream).map_or(0, |p| p.seq);
            if let Some(line) = undelivered(stream, last, Some(a)) {
                if line.starts_with("UNDELIVERED") {
                    problems = problems.saturating_add(1);
                }
                out.push(line);
            }
        }
    }
    Report {
        lines: out,
        problems,
        records,
        streams: stream_count,
    }
}

/// The report line for records a stream's shipper chained past the last one stored.
fn undelivered(stream: &str, last_stored: u64, a: Option<&Announced>) -> Option<String> {
    let a = a.filter(|a| a.chained_seq > last_stored)?;
    let range = format!("seq={}..{}", last_stored.saturating_add(1), a.chained_seq);
    Some(if a.stale {
        format!(
            "UNDELIVERED stream={stream} {range}: chained by the shipper (last heard {}) but never stored; lost if that shipper stopped (an Envoy restart loses the records it still held)",
            a.seen_at
        )
    } else {
        format!(
            "PENDING stream={stream} {range}: chained by the shipper (last heard {}), not stored yet",
            a.seen_at
        )
    })
}
