//! The database behind a deadline (docs/audit.md §5, "Database timeout"). Every DB operation
//! of `serve` runs on one worker thread that owns the connection; the request thread waits for
//! its answer at most `timeout`. A PostgreSQL server that is stopped (SIGSTOP), or a network
//! that drops packets, makes a call block inside the client library, with no error and no
//! end: without the deadline the collector would hold the batch (and its store lock) until
//! the shipper's own timeout, and every later batch behind it.
//!
//! A call that misses its deadline keeps running on the worker; until its answer comes the
//! worker is busy and every call fails at once (`Busy`), so the collector answers 503 quickly
//! and never queues work behind a hung server. Its answer is read later
//! ([`DbWorker::poll`]): the caller settles an insert whose outcome it did not know then.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::Duration;

use crate::db::Db;
use crate::record::Record;

enum Job {
    Existing(Vec<String>),
    /// The records, received at, and the batch's mark (stream, chained seq) if any.
    Insert(Vec<Record>, String, Option<(String, u64)>),
    /// A stream's announced chain end (stream, chained seq, seen at).
    Mark(String, u64, String),
}

/// A finished job's result.
pub enum Done {
    Existing(Result<HashMap<String, String>, String>),
    /// Ok(Some(error)): the records committed, the mark failed (best effort).
    Insert(Result<Option<String>, String>),
    Mark(Result<(), String>),
}

/// Why a call has no result.
#[derive(Debug)]
pub enum CallError {
    /// The DB answered with an error (or could not be reached): the call is over.
    Failed(String),
    /// No answer within the deadline: the call is still running on the worker.
    TimedOut,
    /// An earlier call that missed its deadline is still running.
    Busy,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Failed(e) => f.write_str(e),
            CallError::TimedOut => f.write_str("no answer within the database timeout"),
            CallError::Busy => {
                f.write_str("an earlier call that timed out is still waiting for the database")
            }
        }
    }
}

pub struct DbWorker {
    url: String,
    timeout: Duration,
    jobs: Sender<Job>,
    done: Receiver<Done>,
    /// A call missed its deadline and its answer has not been read yet.
    busy: bool,
}

fn spawn(url: String, timeout: Duration) -> (Sender<Job>, Receiver<Done>) {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    std::thread::spawn(move || {
        // Connected on the first job and again after any error (e.g. PostgreSQL restarted).
        let mut db: Option<Db> = None;
        for job in jobs_rx {
            let conn = match db.take() {
                Some(c) => Ok(c),
                None => Db::open_with_timeout(&url, timeout),
            };
            let (result, keep) = match (conn, job) {
                (Err(e), Job::Existing(_)) => (Done::Existing(Err(e)), None),
                (Err(e), Job::Insert(..)) => (Done::Insert(Err(e)), None),
                (Err(e), Job::Mark(..)) => (Done::Mark(Err(e)), None),
                (Ok(mut c), Job::Mark(stream, chained, seen_at)) => {
                    let r = c.save_mark(&stream, chained, &seen_at);
                    let ok = r.is_ok();
                    (Done::Mark(r), ok.then_some(c))
                }
                (Ok(mut c), Job::Existing(ids)) => {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let r = c.existing_lines(&ids);
                    let ok = r.is_ok();
                    (Done::Existing(r), ok.then_some(c))
                }
                (Ok(mut c), Job::Insert(records, received_at, mark)) => {
                    let refs: Vec<&Record> = records.iter().collect();
                    let mark = mark.as_ref().map(|(s, c)| (s.as_str(), *c));
                    let r = c.insert_all(&refs, &received_at, mark);
                    let ok = r.is_ok();
                    (Done::Insert(r), ok.then_some(c))
                }
            };
            db = keep;
            if done_tx.send(result).is_err() {
                return;
            }
        }
    });
    (jobs_tx, done_rx)
}

impl DbWorker {
    pub fn new(url: &str, timeout: Duration) -> DbWorker {
        let (jobs, done) = spawn(url.to_string(), timeout);
        DbWorker {
            url: url.to_string(),
            timeout,
            jobs,
            done,
            busy: false,
        }
    }

    /// The answer of the call that missed its deadline, once it has come (then the worker is
    /// free again); None while it is still running or when there is none.
    pub fn poll(&mut self) -> Option<Done> {
        if !self.busy {
            return None;
        }
        match self.done.try_recv() {
            Ok(d) => {
                self.busy = false;
                Some(d)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.restart();
                None
            }
        }
    }

    fn restart(&mut self) {
        let (jobs, done) = spawn(self.url.clone(), self.timeout);
        self.jobs = jobs;
        self.done = done;
        self.busy = false;
    }

    fn call(&mut self, job: Job) -> Result<Done, CallError> {
        if self.busy {
            return Err(CallError::Busy);
        }
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // The worker is gone (it cannot panic: clippy denies it; this is belt and braces).
            self.restart();
            self.jobs
                .send(job)
                .map_err(|_| CallError::Failed("database worker unavailable".into()))?;
        }
        match self.done.recv_timeout(self.timeout) {
            Ok(d) => Ok(d),
            Err(RecvTimeoutError::Timeout) => {
                self.busy = true;
                Err(CallError::TimedOut)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.restart();
                Err(CallError::Failed("database worker stopped".into()))
            }
        }
    }

    /// The stored line of each id that already exists.
    pub fn existing_lines(&mut self, ids: &[&str]) -> Result<HashMap<String, String>, CallError> {
        let ids = ids.iter().map(|s| (*s).to_string()).collect();
        match self.call(Job::Existing(ids))? {
            Done::Existing(r) => r.map_err(CallError::Failed),
            _ => Err(CallError::Failed("unexpected answer".into())),
        }
    }

    /// Inserts all records in one transaction, with the batch's mark (see `Db::insert_all`):
    /// Ok(Some(error)) when only the mark failed.
    pub fn insert_all(
        &mut self,
        records: &[&Record],
        received_at: &str,
        mark: Option<(&str, u64)>,
    ) -> Result<Option<String>, CallError> {
        let records = records.iter().map(|r| (*r).clone()).collect();
        let mark = mark.map(|(s, c)| (s.to_string(), c));
        match self.call(Job::Insert(records, received_at.to_string(), mark))? {
            Done::Insert(r) => r.map_err(CallError::Failed),
            _ => Err(CallError::Failed("unexpected answer".into())),
        }
    }

    /// Keeps the last seq a shipper says it has chained in `stream`.
    pub fn save_mark(
        &mut self,
        stream: &str,
        chained: u64,
        seen_at: &str,
    ) -> Result<(), CallError> {
        match self.call(Job::Mark(stream.to_string(), chained, seen_at.to_string()))? {
            Done::Mark(r) => r.map_err(CallError::Failed),
            _ => Err(CallError::Failed("unexpected answer".into())),
        }
    }
}
