//! Append-only JSONL files: `audit-YYYY-MM-DD.jsonl`, then `audit-YYYY-MM-DD.N.jsonl`
//! once a file would pass the size limit. The date is the UTC date the collector
//! wrote the line (not the record's `ts`): a client clock cannot make the
//! collector write into an old, already-closed file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime};

pub struct FileStore {
    dir: PathBuf,
    max_bytes: u64,
}

/// A file touched by one append, with its length before the append, so a
/// failed batch can be cut back off.
pub struct Touched {
    path: PathBuf,
    len_before: u64,
    created: bool,
}

/// One line read back from the files (for `verify --files`).
pub struct FileLine {
    pub file: String,
    pub line_no: usize,
    pub line: String,
}

fn date_str(d: Date) -> Result<String, String> {
    d.format(&format_description!("[year]-[month]-[day]"))
        .map_err(|e| format!("cannot format date: {e}"))
}

fn file_name(date: &str, index: u32) -> String {
    if index == 0 {
        format!("audit-{date}.jsonl")
    } else {
        format!("audit-{date}.{index}.jsonl")
    }
}

/// `audit-2026-01-02.jsonl` -> (2026-01-02, 0); `audit-2026-01-02.3.jsonl` -> (.., 3).
pub fn parse_name(name: &str) -> Option<(Date, u32)> {
    let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (date, index) = match rest.split_once('.') {
        Some((d, i)) => (d, i.parse::<u32>().ok().filter(|i| *i > 0)?),
        None => (rest, 0),
    };
    let date = Date::parse(date, &format_description!("[year]-[month]-[day]")).ok()?;
    Some((date, index))
}

fn audit_files(dir: &Path) -> Result<Vec<(Date, u32, PathBuf)>, String> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
        let name = entry.file_name();
        if let Some((d, i)) = name.to_str().and_then(parse_name) {
            out.push((d, i, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

impl FileStore {
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, String> {
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(1),
        })
    }

    /// Appends the lines (each followed by LF) to today's file(s) and fsyncs them.
    pub fn append(&self, lines: &[&str], now: OffsetDateTime) -> Result<Vec<Touched>, String> {
        let date = date_str(now.date())?;
        let mut index = audit_files(&self.dir)?
            .into_iter()
            .filter(|(d, _, _)| *d == now.date())
            .map(|(_, i, _)| i)
            .max()
            .unwrap_or(0);
        let mut touched: Vec<Touched> = Vec::new();
        let mut open: Option<(File, u64)> = None;
        // The lines for the open file, written with one call when the file is done (a write
        // per line cost a system call per record: docs/benchmarks.md, aura-audit).
        let mut pending: Vec<u8> = Vec::new();
        let result = (|| -> Result<(), String> {
            for line in lines {
                let len = u64::try_from(line.len())
                    .unwrap_or(u64::MAX)
                    .saturating_add(1);
                if open.is_none() {
                    open = Some(self.open_file(&date, index, &mut touched)?);
                }
                if let Some((_, size)) = &open {
                    if *size > 0 && size.saturating_add(len) > self.max_bytes {
                        if let Some((f, _)) = open.take() {
                            finish(&f, &mut pending)?;
                        }
                        index = index.saturating_add(1);
                        open = Some(self.open_file(&date, index, &mut touched)?);
                    }
                }
                if let Some((_, size)) = open.as_mut() {
                    pending.extend_from_slice(line.as_bytes());
                    pending.push(b'\n');
                    *size = size.saturating_add(len);
                }
            }
            if let Some((f, _)) = open.take() {
                finish(&f, &mut pending)?;
            }
            if touched.iter().any(|t| t.created) {
                // A new file's directory entry must be durable too.
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("fsync dir: {e}"))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(touched),
            Err(e) => {
                rollback(&touched);
                Err(e)
            }
        }
    }

    fn open_file(
        &self,
        date: &str,
        index: u32,
        touched: &mut Vec<Touched>,
    ) -> Result<(File, u64), String> {
        let path = self.dir.join(file_name(date, index));
        let existed = path.exists();
        let mut opts = OpenOptions::new();
        opts.create(true).append(true).read(true);
        #[cfg(unix)]
        {
            // Audit lines carry IPs and user ids: not world-readable.
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o640);
        }
        let f = opts
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let size = f
            .metadata()
            .map_err(|e| format!("stat {}: {e}", path.display()))?
            .len();
        let size = cut_torn_tail(&f, size).map_err(|e| format!("{}: {e}", path.display()))?;
        touched.push(Touched {
            path,
            len_before: size,
            created: !existed,
        });
        Ok((f, size))
    }

    /// Deletes files whose date is more than `days` days before `now`'s date.
    /// Returns the names deleted.
    pub fn apply_retention(&self, days: u32, now: OffsetDateTime) -> Result<Vec<String>, String> {
        let cutoff = cutoff_date(days, now);
        let mut deleted = Vec::new();
        for (d, _, path) in audit_files(&self.dir)? {
            if d < cutoff {
                fs::remove_file(&path).map_err(|e| format!("delete {}: {e}", path.display()))?;
                deleted.push(path.display().to_string());
            }
        }
        Ok(deleted)
    }
}

/// The first UTC date retention keeps: today and the `days` before it.
fn cutoff_date(days: u32, now: OffsetDateTime) -> Date {
    now.date()
        .checked_sub(Duration::days(i64::from(days)))
        .unwrap_or(Date::MIN)
}

/// The same cut for database rows: rows received before this instant (the start of the first
/// kept day, as a normalised timestamp) are deleted, as their file would be.
pub fn retention_cutoff(days: u32, now: OffsetDateTime) -> Result<String, String> {
    crate::record::format_ts(cutoff_date(days, now).midnight().assume_utc())
}

/// Writes a file's lines of the batch and fsyncs it.
fn finish(mut f: &File, pending: &mut Vec<u8>) -> Result<(), String> {
    f.write_all(pending)
        .map_err(|e| format!("write audit file: {e}"))?;
    pending.clear();
    f.sync_all().map_err(|e| format!("fsync: {e}"))
}

/// Cuts a file that does not end with LF back to just after its last LF. Only a write that
/// was cut short leaves such a tail (the collector killed mid-write, or a rollback that
/// failed): a batch is answered 200 only after every line and its LF are written, so the
/// tail was never acknowledged and its records are sent again. Appending after it would glue
/// the next line to it and make both unreadable. Returns the new size.
fn cut_torn_tail(mut f: &File, size: u64) -> Result<u64, String> {
    if size == 0 {
        return Ok(0);
    }
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let len = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
        let chunk = buf.get_mut(..len).ok_or("read: bad length")?;
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(chunk))
            .map_err(|e| format!("read tail: {e}"))?;
        if end == size && chunk.last() == Some(&b'\n') {
            return Ok(size);
        }
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            let keep = start.saturating_add(i as u64).saturating_add(1);
            return truncate_torn(f, size, keep);
        }
        if start == 0 {
            return truncate_torn(f, size, 0);
        }
        end = start;
    }
}

fn truncate_torn(f: &File, size: u64, keep: u64) -> Result<u64, String> {
    tracing::warn!(
        bytes = size.saturating_sub(keep),
        "cutting a torn last line (never acknowledged)"
    );
    f.set_len(keep)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cut torn tail: {e}"))?;
    Ok(keep)
}

/// Cuts the files back to their length before a failed batch (best effort:
/// the batch is answered 503 and will be re-sent).
pub fn rollback(touched: &[Touched]) {
    for t in touched {
        let r = if t.created && t.len_before == 0 {
            fs::remove_file(&t.path)
        } else {
            OpenOptions::new()
                .write(true)
                .open(&t.path)
                .and_then(|f| f.set_len(t.len_before).and_then(|()| f.sync_all()))
        };
        if let Err(e) = r {
            tracing::error!(file = %t.path.display(), error = %e, "rollback failed");
        }
    }
}

/// Reads every audit file in `dir`, oldest first, line by line.
pub fn read_all(dir: &Path) -> Result<Vec<FileLine>, String> {
    let mut out = Vec::new();
    for (_, _, path) in audit_files(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let f = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
            let line = line.map_err(|e| format!("read {}: {e}", path.display()))?;
            out.push(FileLine {
                file: name.clone(),
                line_no: i.saturating_add(1),
                line: String::from_utf8_lossy(&line).into_owned(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_and_without_rotation_index() {
        let (d, i) = parse_name("audit-2026-01-02.jsonl").unwrap();
        assert_eq!((d.to_string(), i), ("2026-01-02".to_string(), 0));
        assert_eq!(parse_name("audit-2026-01-02.3.jsonl").unwrap().1, 3);
        assert!(parse_name("audit-2026-01-02.0.jsonl").is_none());
        assert!(parse_name("audit-2026-13-02.jsonl").is_none());
        assert!(parse_name("other.jsonl").is_none());
    }
}
