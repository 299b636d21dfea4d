//! An Envoy that does not hold the request headers for the filter. Webhook verification and
//! per-user limits pause a request at its headers and decide on its body. Envoy honours that
//! pause only when the wasm filter's config sets `allow_on_headers_stop_iteration: true`;
//! without it Envoy stops the whole stream and never hands the body to the filter, so the
//! request would hang until a timeout. Neither Istio's `WasmPlugin` nor Envoy Gateway's
//! `EnvoyExtensionPolicy` sets the flag (docs/kubernetes.md).
//!
//! The filter cannot read Envoy's config, so it watches: Envoy counts the bytes it received
//! on a stream (the `request.total_size` property) before any filter sees them, and hands them
//! to a filter that holds the headers in the same event. So a paused request whose received
//! size grew while the filter got no body callback proves the flag is off: it is refused with
//! 503 and a log line that names the flag, never streamed upstream. The first body callback
//! of a paused request proves the flag is on, and the watch ends for the VM's life.
//! docs/robustness.md#the-body-hold.

/// How often the root context looks at the paused requests while the flag is unproven.
pub const BODY_HOLD_TICK_MS: u32 = 250;
pub const BODY_HOLD_STATUS: u32 = 503;
pub const BODY_HOLD_MESSAGE: &str =
    "Request body unavailable to aura-guard (Envoy: allow_on_headers_stop_iteration)";
/// Logged once per refused request: the operator's fix.
pub const BODY_HOLD_LOG: &str = "aura-guard: Envoy did not hand a held request's body to the \
    filter: set allow_on_headers_stop_iteration: true in the wasm filter's config (Envoy >= \
    1.35; docs/kubernetes.md). Refused with 503; routes that need the body (webhooks, \
    per-user limits) cannot work until it is set";
/// Counter of requests refused this way.
pub const BODY_HOLD_STAT: &str = "aura_guard.body_hold_unavailable";

/// The paused requests of one VM (one worker), by context id, each with the size Envoy had
/// received when it paused and what to answer it. A Vec, not a map: few entries, and a
/// smaller module.
#[derive(Debug)]
pub struct BodyWatch<T> {
    proven: bool,
    waiting: Vec<(u32, u64, T)>,
}

impl<T> Default for BodyWatch<T> {
    fn default() -> Self {
        BodyWatch {
            proven: false,
            waiting: Vec::new(),
        }
    }
}

impl<T> BodyWatch<T> {
    /// Whether a body callback of a paused request has shown that Envoy holds headers.
    pub fn proven(&self) -> bool {
        self.proven
    }

    /// A request paused at its headers for its body; `received`: Envoy's count of its bytes.
    pub fn paused(&mut self, context_id: u32, received: u64, answer: T) {
        if !self.proven {
            self.done(context_id);
            self.waiting.push((context_id, received, answer));
        }
    }

    /// A paused request got a body callback: Envoy holds headers for this filter.
    pub fn body_seen(&mut self) {
        self.proven = true;
        self.waiting.clear();
    }

    /// The stream ended (or no longer waits).
    pub fn done(&mut self, context_id: u32) {
        self.waiting.retain(|(id, _, _)| *id != context_id);
    }

    /// Takes the requests for which Envoy received more bytes than when they paused, yet the
    /// filter got no body callback: Envoy withholds their body. `received` reads the current
    /// count of a stream (None: unknown, the request keeps waiting).
    pub fn starved(&mut self, mut received: impl FnMut(u32) -> Option<u64>) -> Vec<(u32, T)> {
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(id, at_pause, _)| received(*id).is_some_and(|now| now > *at_pause));
        self.waiting = keep;
        late.into_iter()
            .map(|(id, _, answer)| (id, answer))
            .collect()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn a_request_whose_bytes_arrived_without_a_body_callback_is_starved() {
        let mut w = BodyWatch::default();
        w.paused(7, 100, "a");
        w.paused(8, 200, "b");
        w.paused(9, 300, "c");
        let sizes = |id: u32| match id {
            7 => Some(100), // nothing more arrived: the client has not sent its body yet
            8 => Some(250),
            _ => None,
        };
        assert_eq!(w.starved(sizes), vec![(8, "b")]);
        assert_eq!(w.starved(sizes), vec![], "answered once");
        assert_eq!(w.waiting(), 2);
        w.done(7);
        w.done(9);
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn one_body_callback_proves_the_hold_and_ends_the_watch() {
        let mut w = BodyWatch::default();
        w.paused(1, 0, ());
        w.paused(2, 0, ());
        w.body_seen();
        assert!(w.proven());
        assert_eq!(w.waiting(), 0);
        w.paused(3, 0, ());
        assert!(w.starved(|_| Some(u64::MAX)).is_empty());
    }

    #[test]
    fn a_request_paused_for_its_body_has_a_503_ready_with_the_security_headers() {
        use crate::config::Config;
        use crate::filter::{Action, HttpFilter, Policy};
        use crate::host::mock::MockHost;
        use std::rc::Rc;
        let env = [
            ("ENVIRONMENT", "development"),
            ("WEBHOOK_SECRET_STRIPE", "s"),
        ];
        let config = Config::load(b"{}", &crate::testing::env_of(&env)).unwrap();
        let mut f = HttpFilter::new(Rc::new(Policy::new(config)));
        let mut host = MockHost::default();
        for (k, v) in [
            (":method", "POST"),
            (":path", "/webhooks/stripe"),
            ("stripe-signature", "t=1,v1=00"),
            ("x-request-id", "req-7"),
        ] {
            host.request_headers.push((k.into(), v.into()));
        }
        host.now_ms = 1_000;
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert!(f.awaiting_body());
        let (status, headers, body) = f.body_hold_reply();
        assert_eq!(status, 503);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["detail"], BODY_HOLD_MESSAGE);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-request-id"), Some("req-7"));
        assert_eq!(get("x-content-type-options"), Some("nosniff"));
        assert_eq!(get("content-type"), Some("application/json"));
        // A plain request is never paused for a body.
        let mut plain = MockHost::default();
        plain.request_headers.push((":method".into(), "GET".into()));
        plain.request_headers.push((":path".into(), "/x".into()));
        let config = Config::load(b"{}", &crate::testing::env_of(&env)).unwrap();
        let mut g = HttpFilter::new(Rc::new(Policy::new(config)));
        assert_eq!(g.on_request_headers(&mut plain, false), Action::Continue);
        assert!(!g.awaiting_body());
    }
}
