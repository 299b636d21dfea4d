//! The glue of `aura_guard_core::filter::body_hold`: one watch per VM (a worker's HTTP
//! contexts and their root share the thread), fed by the HTTP contexts and checked by the
//! root's tick. The tick reads each paused stream's `request.total_size` and answers a starved
//! one through `set_effective_context` (the only way a root acts on a stream).

use crate::abi;
use crate::host::{add_counter, log_line, warn_failed};
use aura_guard_core::filter::body_hold::{
    BodyWatch, BODY_HOLD_LOG, BODY_HOLD_STAT, BODY_HOLD_TICK_MS,
};
use proxy_wasm::types::LogLevel;
use std::cell::RefCell;

/// A prepared reply: status, headers, body.
type Answer = (u32, Vec<(String, String)>, Vec<u8>);

thread_local! {
    static WATCH: RefCell<BodyWatch<Answer>> = RefCell::new(BodyWatch::default());
}

fn with_watch<R>(f: impl FnOnce(&mut BodyWatch<Answer>) -> R) -> Option<R> {
    WATCH.with(|w| w.try_borrow_mut().ok().map(|mut w| f(&mut w)))
}

/// The filter root starts watching at configure (until a body callback proves the hold).
pub(crate) fn start_ticking() {
    if let Err(status) = abi::set_tick_period_ms(BODY_HOLD_TICK_MS) {
        warn_failed("set_tick_period(body hold)", status);
    }
}

/// Bytes Envoy has received on the current stream, headers included (Envoy's
/// `request.total_size`: an 8-byte little-endian integer).
pub(crate) fn received() -> Option<u64> {
    match abi::get_property(&["request", "total_size"]) {
        Ok(Some(bytes)) => Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)),
        Ok(None) => None,
        Err(status) => {
            warn_failed("get_property(request.total_size)", status);
            None
        }
    }
}

/// A request paused for its body. Without Envoy's byte count it cannot be watched.
pub(crate) fn paused(context_id: u32, answer: Answer) {
    if let Some(size) = received() {
        with_watch(|w| w.paused(context_id, size, answer));
    }
}

pub(crate) fn body_seen() {
    with_watch(|w| w.body_seen());
}

pub(crate) fn done(context_id: u32) {
    with_watch(|w| w.done(context_id));
}

/// The root's tick: answers the requests that waited too long; stops ticking once the hold
/// is proven.
pub(crate) fn on_tick(root_context_id: u32) {
    let Some(proven) = with_watch(|w| w.proven()) else {
        return;
    };
    if proven {
        if let Err(status) = abi::set_tick_period_ms(0) {
            warn_failed("set_tick_period(0)", status);
        }
        return;
    }
    // Each paused stream's byte count is read with the stream as the effective context.
    let Some(starved) = with_watch(|w| {
        w.starved(|id| {
            abi::set_effective_context(id).ok()?;
            received()
        })
    }) else {
        return;
    };
    for (context_id, (status, headers, body)) in starved {
        if let Err(e) = abi::set_effective_context(context_id) {
            warn_failed("set_effective_context(held request)", e);
            continue;
        }
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Err(e) = abi::send_local_response(status, &pairs, &body) {
            warn_failed("send_http_response(body hold)", e);
        }
        log_line(LogLevel::Error, BODY_HOLD_LOG);
        add_counter(BODY_HOLD_STAT, 1);
    }
    if let Err(e) = abi::set_effective_context(root_context_id) {
        warn_failed("set_effective_context(root)", e);
    }
}
