//! Auth-endpoint rate limiting through envoyproxy/ratelimit (RLS v3). See docs/ratelimit.md.

pub mod config;
pub mod identity;
pub mod planner;
pub mod response_headers;
pub mod rls;
pub mod service_yaml;
pub mod window;
