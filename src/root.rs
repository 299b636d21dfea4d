//! The root context: reads the plugin configuration at `on_configure`, builds the shared
//! [`Policy`], and creates one HTTP context per stream. In the audit shipper's bootstrap VM
//! it hosts the [`AuditService`] instead.

use crate::abi;
use crate::audit_service::{self, AuditService};
use crate::host::{log_line, WasmHost};
use crate::AuraHttp;
use aura_guard_core::config::Config;
use aura_guard_core::filter::{HttpFilter, Policy};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};
use std::rc::Rc;

/// The commit the module was built from: scripts/build-wasm.sh sets `AURA_GUARD_GIT_COMMIT`
/// (a plain `cargo build` has none). Logged at configure with the version (docs/release.md).
const GIT_COMMIT: &str = match option_env!("AURA_GUARD_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

pub(crate) struct AuraRoot {
    /// Fire-and-forget gRPC calls are made on the root context so they outlive the request.
    pub(crate) context_id: u32,
    pub(crate) policy: Option<Rc<Policy>>,
    /// Set in the audit shipper's service VM (root_id `aura-guard-audit`).
    pub(crate) audit_service: Option<AuditService>,
}

impl Context for AuraRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(service) = self.audit_service.as_mut() {
            service.on_http_call_response(token_id, num_headers, body_size);
        }
    }
}

impl RootContext for AuraRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = match abi::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log_line(
                    LogLevel::Error,
                    &format!("aura-guard: cannot read the plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        if audit_service::is_service_root() {
            self.audit_service = AuditService::configure(&raw);
            return self.audit_service.is_some();
        }
        // WASI environ: Envoy passes what `vm_config.environment_variables` names.
        let env = |key: &str| std::env::var(key).ok();
        match Config::load(&raw, &env) {
            Ok(config) => {
                log_line(
                    LogLevel::Info,
                    &format!(
                        "aura-guard: configured for environment {}; version {}, commit {}",
                        config.environment.as_str(),
                        env!("CARGO_PKG_VERSION"),
                        GIT_COMMIT
                    ),
                );
                // Nothing named the environment: production, said loudly so a development
                // stack that forgot ENVIRONMENT sees why its debug endpoints are gone.
                if let Some(warning) = config.environment_warning() {
                    log_line(LogLevel::Warn, &warning);
                }
                if config.jwt_users_anonymous() {
                    log_line(
                        LogLevel::Warn,
                        &format!(
                            "aura-guard: {} is not set: rate-limited JWT users are anonymous \
                             (limited per IP only); production refuses to start without it",
                            config.jwt.secret_env
                        ),
                    );
                }
                if config.webhook.replay.enabled {
                    // Before this worker serves requests (see init_replay_store).
                    aura_guard_core::webhook::replay::init_replay_store(&mut WasmHost {
                        context_id: self.context_id,
                        root_context_id: self.context_id,
                    });
                }
                self.policy = Some(Rc::new(Policy::new(config)));
                crate::body_hold::start_ticking();
                true
            }
            Err(err) => {
                // Returning false makes Envoy reject the configuration.
                log_line(
                    LogLevel::Error,
                    &format!("aura-guard: invalid configuration: {err}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics on it. Without a policy (a root whose configuration was
        // refused, or the shipper's, where Envoy creates no streams) the stream is refused.
        Some(Box::new(AuraHttp {
            filter: self.policy.clone().map(HttpFilter::new),
            host: WasmHost {
                context_id,
                root_context_id: self.context_id,
            },
            held: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        match self.audit_service.as_mut() {
            Some(service) => service.on_tick(),
            None => crate::body_hold::on_tick(self.context_id),
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(service) = self.audit_service.as_mut() {
            service.on_queue_ready(queue_id);
        }
    }
}
