//! Auth-endpoint rate limiting through envoyproxy/ratelimit (RLS v3). See docs/ratelimit.md.

pub mod client_ip;
pub mod headers;
pub mod identity;
pub mod jwt;
pub mod planner;
pub mod rls;
pub mod service_yaml;
pub mod window;
