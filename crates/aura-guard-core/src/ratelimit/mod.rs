//! Auth-endpoint rate limiting through envoyproxy/ratelimit (RLS v3). See docs/ratelimit.md.

pub mod rls;
pub mod window;
pub mod client_ip;
pub mod identity;
pub mod jwt;
pub mod headers;
pub mod planner;
pub mod service_yaml;
