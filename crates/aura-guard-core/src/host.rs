//! The host behind a trait: everything the pipeline needs from Envoy. The glue implements it
//! with proxy-wasm host calls (handling every `Result`); tests implement it with `MockHost`.

/// Why a record was not put on the audit shipper's queue (the filter counts and logs each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueError {
    /// The shipper's heartbeat has passed (docs/robustness.md): it is not draining its queue,
    /// so the record is not enqueued to pile up there.
    ShipperStale,
    /// The queue does not exist (no shipper VM) or the host refused the call.
    QueueUnavailable,
}

/// Why a shared-data write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedDataError {
    /// Another worker changed the value since it was read: read it again and retry.
    CasMismatch,
    /// Any other host failure.
    Unavailable,
}

/// Log levels, mirroring proxy-wasm's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A unary gRPC call for the host to dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCall<'a> {
    /// Envoy cluster (HTTP/2).
    pub cluster: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    /// The encoded request message.
    pub message: &'a [u8],
    pub timeout_ms: u64,
}

/// The request's headers, read from the host once per request (one crossing instead of one per
/// header: docs/benchmarks.md#what-a-request-costs) and kept in step with the filter's own
/// changes. Names compare case-insensitively.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestHeaders(Vec<(String, String)>);

impl RequestHeaders {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        RequestHeaders(pairs)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header in order, pseudo-headers included.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Records that the filter set `name` to `value` on the host.
    pub fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.0.push((name.to_string(), value.to_string()));
    }

    /// Records that the filter removed every value of `name` on the host.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

pub trait Host {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
    /// 16 unpredictable bytes (request ids, record ids).
    fn random16(&mut self) -> [u8; 16];
    fn log(&self, level: Level, message: &str);
    /// Adds one to an Envoy counter, created on first use (shown as `wasmcustom.<name>`).
    fn count(&mut self, name: &str);

    fn set_request_header(&mut self, name: &str, value: &str);
    /// Removes every value of a request header, so the upstream never sees it.
    fn remove_request_header(&mut self, name: &str);
    fn response_header(&self, name: &str) -> Option<String>;
    fn set_response_header(&mut self, name: &str, value: &str);
    /// Ends the request with a reply made by the filter; the upstream never sees the request.
    fn send_reply(&mut self, status: u32, headers: &[(String, String)], body: &[u8]);
    /// The buffered request body, `len` bytes from `start` (None if unavailable).
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Lets a paused request continue to the upstream (after an asynchronous decision).
    fn resume_request(&mut self);

    /// Every request header in order, pseudo-headers included (values that are not UTF-8
    /// are converted lossily).
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Envoy's downstream peer address (`source.address`, "ip:port").
    fn downstream_address(&self) -> Option<String> {
        None
    }
    /// The final response status (`response.code`), known at the end of the stream.
    fn response_code(&self) -> Option<u32> {
        None
    }
    /// Enqueues `data` on the shared queue `queue` registered by the VM `vm_id` (the audit
    /// shipper); why not, when it was not.
    fn enqueue_shared(
        &mut self,
        _vm_id: &str,
        _queue: &str,
        _data: &[u8],
    ) -> Result<(), EnqueueError> {
        Err(EnqueueError::QueueUnavailable)
    }
    /// Proxy-wasm shared data, shared by all workers of one Envoy (per `vm_id`): the value
    /// (None when the key does not exist) and its compare-and-swap token.
    fn get_shared_data(&self, key: &str)
        -> Result<(Option<Vec<u8>>, Option<u32>), SharedDataError>;
    /// Writes shared data; with `cas` the write fails with `CasMismatch` if the value changed
    /// since the read that returned that token.
    fn set_shared_data(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError>;
    /// Dispatches a gRPC call bound to this request; its answer comes back through
    /// `HttpFilter::on_grpc_response` with the returned token. None: it could not be dispatched.
    fn dispatch_grpc(&mut self, call: &GrpcCall<'_>) -> Option<u32>;
    /// Dispatches a fire-and-forget gRPC call that must outlive the request (Envoy cancels a
    /// request's outstanding calls when the stream ends). Its answer is ignored.
    fn dispatch_grpc_detached(&mut self, call: &GrpcCall<'_>) -> bool;
}

#[cfg(test)]
pub mod mock {
    //! An in-memory host for unit tests of the pipeline.
    use super::{EnqueueError, GrpcCall, Host, Level, SharedDataError};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Reply {
        pub status: u32,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    /// A gRPC call the filter dispatched.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SentGrpc {
        pub cluster: String,
        pub service: String,
        pub method: String,
        pub message: Vec<u8>,
        pub timeout_ms: u64,
        /// Token for calls bound to the request, None for detached ones.
        pub token: Option<u32>,
    }

    #[derive(Debug, Default)]
    pub struct MockHost {
        pub now_ms: u64,
        pub next_random: u8,
        pub request_headers: Vec<(String, String)>,
        pub response_headers: Vec<(String, String)>,
        pub reply: Option<Reply>,
        pub request_body: Vec<u8>,
        /// Every `request_body` read, as (start, bytes returned): tests pin how often and
        /// how much of the body is copied out of the host.
        pub body_reads: RefCell<Vec<(usize, usize)>>,
        pub resumed: u32,
        pub counters: BTreeMap<String, u64>,
        pub logs: RefCell<Vec<(Level, String)>>,
        pub downstream_address: Option<String>,
        pub response_code: Option<u32>,
        /// Shared queues that exist, by (vm_id, name); enqueued items land here.
        pub queues: BTreeMap<(String, String), Vec<Vec<u8>>>,
        /// Shared data: value and CAS token per key.
        pub shared: BTreeMap<String, (Vec<u8>, u32)>,
        /// The next this many CAS writes fail with a mismatch (another worker won the race).
        pub cas_conflicts: u32,
        /// Every shared-data call fails.
        pub shared_unavailable: bool,
        pub grpc_calls: Vec<SentGrpc>,
        /// Makes `dispatch_grpc` fail (e.g. unknown cluster).
        pub grpc_dispatch_fails: bool,
        /// The shipper's heartbeat has passed: every enqueue is refused as stale.
        pub shipper_stale: bool,
        /// Every `Host` call made, by method name, in order: each is a crossing into the host
        /// in the module, the per-request cost `filter::cost_tests` pins.
        pub calls: RefCell<Vec<&'static str>>,
    }

    impl MockHost {
        /// A request header as the upstream would see it (not a `Host` call: tests only).
        pub fn request_header(&self, name: &str) -> Option<String> {
            get(&self.request_headers, name)
        }

        fn called(&self, what: &'static str) {
            self.calls.borrow_mut().push(what);
        }

        fn record_grpc(&mut self, call: &GrpcCall<'_>, token: Option<u32>) {
            self.grpc_calls.push(SentGrpc {
                cluster: call.cluster.to_string(),
                service: call.service.to_string(),
                method: call.method.to_string(),
                message: call.message.to_vec(),
                timeout_ms: call.timeout_ms,
                token,
            });
        }
    }

    fn get(list: &[(String, String)], name: &str) -> Option<String> {
        list.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn set(list: &mut Vec<(String, String)>, name: &str, value: &str) {
        list.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        list.push((name.to_string(), value.to_string()));
    }

    impl Host for MockHost {
        fn now_ms(&self) -> u64 {
            self.called("now_ms");
            self.now_ms
        }
        fn random16(&mut self) -> [u8; 16] {
            self.called("random16");
            self.next_random = self.next_random.wrapping_add(1);
            [self.next_random; 16]
        }
        fn log(&self, level: Level, message: &str) {
            self.called("log");
            self.logs.borrow_mut().push((level, message.to_string()));
        }
        fn count(&mut self, name: &str) {
            self.called("count");
            *self.counters.entry(name.to_string()).or_default() += 1;
        }
        fn set_request_header(&mut self, name: &str, value: &str) {
            self.called("set_request_header");
            set(&mut self.request_headers, name, value)
        }
        fn remove_request_header(&mut self, name: &str) {
            self.called("remove_request_header");
            self.request_headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
        fn response_header(&self, name: &str) -> Option<String> {
            self.called("response_header");
            get(&self.response_headers, name)
        }
        fn set_response_header(&mut self, name: &str, value: &str) {
            self.called("set_response_header");
            set(&mut self.response_headers, name, value)
        }
        fn send_reply(&mut self, status: u32, headers: &[(String, String)], body: &[u8]) {
            self.called("send_reply");
            self.reply = Some(Reply {
                status,
                headers: headers.to_vec(),
                body: body.to_vec(),
            });
        }
        fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
            self.called("request_body");
            let end = start.checked_add(len)?.min(self.request_body.len());
            let body = self.request_body.get(start..end).map(|b| b.to_vec());
            if let Some(b) = &body {
                self.body_reads.borrow_mut().push((start, b.len()));
            }
            body
        }
        fn resume_request(&mut self) {
            self.called("resume_request");
            self.resumed += 1;
        }
        fn response_code(&self) -> Option<u32> {
            self.called("response_code");
            self.response_code
        }
        fn enqueue_shared(
            &mut self,
            vm_id: &str,
            queue: &str,
            data: &[u8],
        ) -> Result<(), EnqueueError> {
            if self.shipper_stale {
                return Err(EnqueueError::ShipperStale);
            }
            match self.queues.get_mut(&(vm_id.to_string(), queue.to_string())) {
                Some(q) => {
                    q.push(data.to_vec());
                    Ok(())
                }
                None => Err(EnqueueError::QueueUnavailable),
            }
        }
        fn request_headers(&self) -> Vec<(String, String)> {
            self.called("request_headers");
            self.request_headers.clone()
        }
        fn downstream_address(&self) -> Option<String> {
            self.called("downstream_address");
            self.downstream_address.clone()
        }
        fn get_shared_data(
            &self,
            key: &str,
        ) -> Result<(Option<Vec<u8>>, Option<u32>), SharedDataError> {
            if self.shared_unavailable {
                return Err(SharedDataError::Unavailable);
            }
            Ok(match self.shared.get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            })
        }
        fn set_shared_data(
            &mut self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), SharedDataError> {
            if self.shared_unavailable {
                return Err(SharedDataError::Unavailable);
            }
            let current = self.shared.get(key).map(|(_, c)| *c);
            if let (Some(want), Some(have)) = (cas, current) {
                if self.cas_conflicts > 0 {
                    self.cas_conflicts -= 1;
                    return Err(SharedDataError::CasMismatch);
                }
                if want != have {
                    return Err(SharedDataError::CasMismatch);
                }
            }
            let next = current.unwrap_or(0).wrapping_add(1);
            self.shared.insert(key.to_string(), (value.to_vec(), next));
            Ok(())
        }
        fn dispatch_grpc(&mut self, call: &GrpcCall<'_>) -> Option<u32> {
            self.called("dispatch_grpc");
            if self.grpc_dispatch_fails {
                return None;
            }
            let token = u32::try_from(self.grpc_calls.len())
                .unwrap_or(u32::MAX)
                .saturating_add(100);
            self.record_grpc(call, Some(token));
            Some(token)
        }
        fn dispatch_grpc_detached(&mut self, call: &GrpcCall<'_>) -> bool {
            self.called("dispatch_grpc_detached");
            if self.grpc_dispatch_fails {
                return false;
            }
            self.record_grpc(call, None);
            true
        }
    }
}
