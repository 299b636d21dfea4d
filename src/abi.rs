//! Own thin wrappers over the proxy-wasm ABI imports the glue calls (docs/robustness.md).
//!
//! Why: the SDK (proxy-wasm 0.2.5, `hostcalls.rs`) `panic!`s on every host status it did not
//! expect (e.g. `BadArgument` when Envoy has already released a header map), and a panic traps
//! the VM: the worker's traffic gets 503s until the VM is reloaded, and a trapped shipper is
//! never reloaded. These wrappers declare the same imports (module `env`, the same wasm
//! signatures as the SDK's declarations) but take the status as a plain `u32` (an unknown value
//! in the SDK's `#[repr(u32)]` enum would be undefined behaviour), and [`check`] maps every
//! value to a `Result`.
//!
//! Memory: a buffer the host returns was allocated by calling the SDK's exported
//! `proxy_on_memory_allocate(size)` (a boxed `[u8]` of exactly `size` bytes, alignment 1), so it
//! is taken over with `Vec::from_raw_parts(ptr, size, size)` exactly as the SDK does; an empty
//! answer comes back as a null pointer (cpp-host `copyToPointerSize` allocates nothing then).
//!
//! Dispatch (`proxy_http_call`, `proxy_grpc_call`) stays on the SDK: it registers the returned
//! token with its dispatcher, which routes the answer (`register_*callout` is crate-private).
//! `src/host.rs` says why those two cannot panic.

use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};
use std::ptr::{null, null_mut};

/// A host status other than `Ok` (values from proxy-wasm-cpp-host's `WasmResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostError {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    BadExpression,
    InvalidMemoryAccess,
    Empty,
    CasMismatch,
    ResultMismatch,
    InternalFailure,
    BrokenConnection,
    Unimplemented,
    /// A value no ABI version defines.
    Unknown(u32),
}

/// Every host status to a `Result`: 0 is `Ok`, everything else an error, never a panic.
pub(crate) fn check(status: u32) -> Result<(), HostError> {
    Err(match status {
        0 => return Ok(()),
        1 => HostError::NotFound,
        2 => HostError::BadArgument,
        3 => HostError::SerializationFailure,
        4 => HostError::ParseFailure,
        5 => HostError::BadExpression,
        6 => HostError::InvalidMemoryAccess,
        7 => HostError::Empty,
        8 => HostError::CasMismatch,
        9 => HostError::ResultMismatch,
        10 => HostError::InternalFailure,
        11 => HostError::BrokenConnection,
        12 => HostError::Unimplemented,
        other => HostError::Unknown(other),
    })
}

/// The error of an SDK call (dispatch only): the SDK's `Status` carries the same numbers.
pub(crate) fn from_sdk(status: Status) -> HostError {
    match check(status as u32) {
        Err(e) => e,
        // The SDK never returns `Err(Ok)`; keep it an error all the same.
        Ok(()) => HostError::Unknown(0),
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_register_shared_queue(
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    // The same import wasi-libc declares; std's `Instant::now` panics when it fails.
    #[link_name = "clock_time_get"]
    fn wasi_clock_time_get(clock_id: u32, precision: u64, time: *mut u64) -> u32;
}

/// Takes over a buffer the host allocated through `proxy_on_memory_allocate` (see the module
/// doc); None for a null pointer (the host allocated nothing).
///
/// # Safety
/// `ptr` is null or was returned by the host with `size` for this call.
unsafe fn take(ptr: *mut u8, size: usize) -> Option<Vec<u8>> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: allocated by the SDK's allocator as `size` bytes of alignment 1 and handed
        // over to us by the host; nothing else owns it.
        Some(unsafe { Vec::from_raw_parts(ptr, size, size) })
    }
}

pub(crate) fn log(level: LogLevel, message: &str) -> Result<(), HostError> {
    // SAFETY: the pointer and length come from a live `&str`.
    check(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

/// Envoy's wall clock in nanoseconds since the Unix epoch.
pub(crate) fn current_time_ns() -> Result<u64, HostError> {
    let mut t: u64 = 0;
    // SAFETY: `t` is a live u64 the host writes.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

pub(crate) fn set_tick_period_ms(period_ms: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
}

/// Up to `max_size` bytes of a buffer from `start`; `Ok(None)` when the buffer does not exist
/// or the range is empty.
pub(crate) fn get_buffer(
    buffer: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers point at live locals.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size) };
    match check(status) {
        // SAFETY: the host returned `data`/`size` for this call.
        Ok(()) => Ok(unsafe { take(data, size) }),
        Err(HostError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every (name, value) of a header map, values as bytes (a client can send non-UTF-8 values),
/// names converted lossily.
pub(crate) fn get_map_pairs(map: MapType) -> Result<Vec<(String, Vec<u8>)>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers point at live locals.
    check(unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) })?;
    // SAFETY: the host returned `data`/`size` for this call.
    let Some(bytes) = (unsafe { take(data, size) }) else {
        return Ok(Vec::new());
    };
    decode_pairs(&bytes)
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
                .collect()
        })
        .ok_or(HostError::ResultMismatch)
}

/// One header's value as bytes; `Ok(None)` when the header is absent.
pub(crate) fn get_map_value(map: MapType, key: &str) -> Result<Option<Vec<u8>>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the key comes from a live `&str`; the out-pointers point at live locals.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut data, &mut size)
    };
    match check(status) {
        // An empty value comes back without a buffer.
        // SAFETY: the host returned `data`/`size` for this call.
        Ok(()) => Ok(Some(unsafe { take(data, size) }.unwrap_or_default())),
        Err(HostError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets a header, replacing every value it had.
pub(crate) fn replace_map_value(map: MapType, key: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: both slices are live for the call.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes a header (every value of it); removing an absent header is not an error. (The
/// SDK's `remove_map_value` panics on BadArgument like its other header calls.)
pub(crate) fn remove_map_value(map: MapType, key: &str) -> Result<(), HostError> {
    // SAFETY: the key is live for the call.
    check(unsafe { proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()) })
}

/// A property (`path` parts, e.g. `["source", "address"]`); `Ok(None)` when it does not exist.
pub(crate) fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let path = path.join("\0");
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the path is live for the call; the out-pointers point at live locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match check(status) {
        // SAFETY: the host returned `data`/`size` for this call.
        Ok(()) => Ok(unsafe { take(data, size) }),
        Err(HostError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Shared data: the value (None when absent) and its compare-and-swap token (None for 0).
pub(crate) fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: the key is live for the call; the out-pointers point at live locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match check(status) {
        Ok(()) => {
            // SAFETY: the host returned `data`/`size` for this call.
            let value = unsafe { take(data, size) };
            Ok((value, (cas != 0).then_some(cas)))
        }
        Err(HostError::NotFound) => Ok((None, None)),
        Err(e) => Err(e),
    }
}

/// Writes shared data; with `cas`, `Err(CasMismatch)` when the value changed since that read.
pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
    // SAFETY: both slices are live for the call.
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

pub(crate) fn register_shared_queue(name: &str) -> Result<u32, HostError> {
    let mut id: u32 = 0;
    // SAFETY: the name is live; `id` is a live local.
    check(unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// The id of the queue `name` registered by the VM `vm_id`; `Ok(None)` when there is none.
pub(crate) fn resolve_shared_queue(vm_id: &str, name: &str) -> Result<Option<u32>, HostError> {
    let mut id: u32 = 0;
    // SAFETY: both strings are live; `id` is a live local.
    let status = unsafe {
        proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    };
    match check(status) {
        Ok(()) => Ok(Some(id)),
        Err(HostError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn enqueue_shared_queue(queue_id: u32, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the value is live for the call.
    check(unsafe { proxy_enqueue_shared_queue(queue_id, value.as_ptr(), value.len()) })
}

/// The next item of a queue this VM registered; `Ok(None)` when it is empty.
pub(crate) fn dequeue_shared_queue(queue_id: u32) -> Result<Option<Vec<u8>>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers point at live locals.
    let status = unsafe { proxy_dequeue_shared_queue(queue_id, &mut data, &mut size) };
    match check(status) {
        // An empty item comes back without a buffer.
        // SAFETY: the host returned `data`/`size` for this call.
        Ok(()) => Ok(Some(unsafe { take(data, size) }.unwrap_or_default())),
        Err(HostError::Empty) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Resumes a paused request (`StreamType::HttpRequest`).
pub(crate) fn continue_request() -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { proxy_continue_stream(0) })
}

/// Ends the stream with a reply made here (no gRPC status: -1, as the SDK sends it).
pub(crate) fn send_local_response(
    status_code: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), HostError> {
    let headers = encode_pairs(headers);
    // SAFETY: every slice is live for the call.
    check(unsafe {
        proxy_send_local_response(
            status_code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// The status of the last gRPC call answer (its code and message bytes).
pub(crate) fn get_status() -> Result<(u32, Vec<u8>), HostError> {
    let mut code: u32 = 0;
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers point at live locals.
    check(unsafe { proxy_get_status(&mut code, &mut data, &mut size) })?;
    // SAFETY: the host returned `data`/`size` for this call.
    Ok((code, unsafe { take(data, size) }.unwrap_or_default()))
}

pub(crate) fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_effective_context(context_id) })
}

pub(crate) fn define_metric(kind: MetricType, name: &str) -> Result<u32, HostError> {
    let mut id: u32 = 0;
    // SAFETY: the name is live; `id` is a live local.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub(crate) fn increment_metric(metric_id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { proxy_increment_metric(metric_id, offset) })
}

pub(crate) fn record_metric(metric_id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { proxy_record_metric(metric_id, value) })
}

/// A metric's value (a gauge another VM sets is read this way: Envoy keeps one stat per name).
pub(crate) fn get_metric(metric_id: u32) -> Result<u64, HostError> {
    let mut value: u64 = 0;
    // SAFETY: `value` is a live local.
    check(unsafe { proxy_get_metric(metric_id, &mut value) })?;
    Ok(value)
}

/// WASI's monotonic clock (`CLOCKID_MONOTONIC`, Envoy's monotonic time source) in ns; None
/// when the host refuses it (older hosts answer ENOTSUP) or answers 0.
pub(crate) fn monotonic_ns() -> Option<u64> {
    let mut t: u64 = 0;
    // SAFETY: `t` is a live u64 the host writes.
    let errno = unsafe { wasi_clock_time_get(1, 1, &mut t) };
    (errno == 0 && t != 0).then_some(t)
}

/// The ABI's header-map encoding: a u32 count, then (name length, value length) u32 pairs,
/// then each name and value followed by a NUL (all little-endian).
pub(crate) fn encode_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Decodes [`encode_pairs`]' format; None when the bytes do not hold what they announce
/// (every read is bounds-checked: the SDK's decoder indexes and unwraps).
pub(crate) fn decode_pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let count = u32_at(0)?;
    // The length table must fit before anything is allocated for it.
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let lens = 4 + n * 8;
        let (klen, vlen) = (u32_at(lens)?, u32_at(lens + 4)?);
        let key = bytes.get(data..data.checked_add(klen)?)?;
        data = data.checked_add(klen)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(vlen)?)?;
        data = data.checked_add(vlen)?.checked_add(1)?;
        out.push((key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_status_maps_to_a_result_and_only_0_is_ok() {
        let expected = [
            (0, Ok(())),
            (1, Err(HostError::NotFound)),
            // What the SDK panicked on in proxy_on_http_call_response (envoy#26485).
            (2, Err(HostError::BadArgument)),
            (3, Err(HostError::SerializationFailure)),
            (4, Err(HostError::ParseFailure)),
            (5, Err(HostError::BadExpression)),
            (6, Err(HostError::InvalidMemoryAccess)),
            (7, Err(HostError::Empty)),
            (8, Err(HostError::CasMismatch)),
            (9, Err(HostError::ResultMismatch)),
            (10, Err(HostError::InternalFailure)),
            (11, Err(HostError::BrokenConnection)),
            (12, Err(HostError::Unimplemented)),
            (13, Err(HostError::Unknown(13))),
            (u32::MAX, Err(HostError::Unknown(u32::MAX))),
        ];
        for (status, result) in expected {
            assert_eq!(check(status), result, "status {status}");
        }
    }

    #[test]
    fn sdk_statuses_map_to_the_same_errors() {
        assert_eq!(from_sdk(Status::BadArgument), HostError::BadArgument);
        assert_eq!(from_sdk(Status::ParseFailure), HostError::ParseFailure);
        assert_eq!(
            from_sdk(Status::InternalFailure),
            HostError::InternalFailure
        );
        assert_eq!(from_sdk(Status::Ok), HostError::Unknown(0));
    }

    #[test]
    fn header_pairs_round_trip_with_bytes_that_are_not_utf8() {
        let encoded = encode_pairs(&[(":status", "200"), ("x-empty", "")]);
        assert_eq!(
            decode_pairs(&encoded),
            Some(vec![
                (&b":status"[..], &b"200"[..]),
                (&b"x-empty"[..], &b""[..])
            ])
        );
        // obs-text in a value: one byte 0xff.
        let raw = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'k', 0, 0xff, 0];
        assert_eq!(decode_pairs(&raw), Some(vec![(&b"k"[..], &[0xff][..])]));
        assert_eq!(decode_pairs(&[]), Some(vec![]));
        assert_eq!(decode_pairs(&[0, 0, 0, 0]), Some(vec![]));
    }

    #[test]
    fn malformed_header_pairs_are_refused_not_indexed_past_the_end() {
        let good = encode_pairs(&[("name", "value")]);
        for cut in 1..good.len() - 1 {
            assert_eq!(decode_pairs(&good[..cut]), None, "cut at {cut}");
        }
        // A count whose length table cannot fit (no allocation of 4 G entries).
        assert_eq!(decode_pairs(&[0xff, 0xff, 0xff, 0xff]), None);
        // A length that runs past the end.
        let raw = [1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, b'k', 0, 0];
        assert_eq!(decode_pairs(&raw), None);
    }
}
