//! RLS v3 wire messages (`envoy.service.ratelimit.v3`), hand-declared with prost derive and the
//! exact field numbers of go-control-plane `envoy/v1.37.0`. Only what we send or read is
//! declared; unknown fields in responses (raw_body, dynamic_metadata, quota) are skipped by
//! prost.

use prost::Message;

/// gRPC service and method of ShouldRateLimit.
pub const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const RLS_METHOD: &str = "ShouldRateLimit";

/// `google.protobuf.UInt64Value`. A present wrapper holding 0 means "check, do not count".
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct UInt64Value {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `RateLimitDescriptor.RateLimitOverride` (unused by us; declared for completeness of the
/// descriptor layout).
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct RateLimitOverride {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `envoy.type.v3.RateLimitUnit`.
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "2")]
    pub limit: Option<RateLimitOverride>,
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
}

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `RateLimitResponse.Code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Code {
    Unknown = 0,
    Ok = 1,
    OverLimit = 2,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RateLimit {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `RateLimitResponse.RateLimit.Unit` (SECOND=1 … YEAR=6, WEEK=7).
    #[prost(int32, tag = "2")]
    pub unit: i32,
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct DescriptorStatus {
    #[prost(enumeration = "Code", tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<Duration>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse` (fields 5-7 not declared).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RateLimitResponse {
    #[prost(enumeration = "Code", tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
    #[prost(message, repeated, tag = "4")]
    pub request_headers_to_add: Vec<HeaderValue>,
}

impl RateLimitDescriptor {
    /// A descriptor from `(key, value)` pairs with an explicit per-descriptor hits_addend.
    pub fn with_hits(entries: &[(&str, &str)], hits: u64) -> Self {
        Self {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).to_string(),
                    value: (*v).to_string(),
                })
                .collect(),
            limit: None,
            hits_addend: Some(UInt64Value { value: hits }),
        }
    }
}

impl RateLimitRequest {
    pub fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl RateLimitResponse {
    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn request_encodes_with_rls_v3_field_numbers() {
        let req = RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![RateLimitDescriptor::with_hits(&[("k", "v")], 0)],
            hits_addend: 0,
        };
        let bytes = req.encode_to_bytes();
        // 0x0a = field 1 (domain, LEN) "d"; 0x12 = field 2 (descriptors, LEN) of 10 bytes:
        //   0x0a = field 1 (entries, LEN) of 6: 0x0a "k" (key=1), 0x12 "v" (value=2)
        //   0x1a 0x00 = field 3 (hits_addend UInt64Value) present and empty, i.e. value 0.
        assert_eq!(
            bytes,
            vec![
                0x0a, 0x01, b'd', 0x12, 0x0a, 0x0a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x1a,
                0x00
            ]
        );
    }

    #[test]
    fn request_hits_addend_and_override_use_fields_3_and_2() {
        let mut d = RateLimitDescriptor::with_hits(&[], 5);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: 7,
            unit: 2,
        });
        let req = RateLimitRequest {
            domain: String::new(),
            descriptors: vec![d],
            hits_addend: 3,
        };
        assert_eq!(
            req.encode_to_bytes(),
            // descriptors: limit (0x12 len 4: 0x08 7, 0x10 2), hits_addend (0x1a len 2: 0x08 5);
            // request hits_addend 0x18 3.
            vec![
                0x12, 0x0a, 0x12, 0x04, 0x08, 0x07, 0x10, 0x02, 0x1a, 0x02, 0x08, 0x05, 0x18, 0x03
            ]
        );
    }

    #[test]
    fn response_decodes_from_known_bytes() {
        let bytes = [
            0x08, 0x02, // overall_code = OVER_LIMIT
            0x12, 0x0e, // statuses[0], 14 bytes
            0x08, 0x02, //   code = OVER_LIMIT
            0x12, 0x04, 0x08, 0x05, 0x10, 0x03, // current_limit {5, HOUR}
            0x18, 0x00, //   limit_remaining = 0
            0x22, 0x02, 0x08, 0x2a, // duration_until_reset 42 s
            0x1a, 0x07, 0x0a, 0x01, b'a', 0x12, 0x02, b'b', b'c', // response header a: bc
            0x2a, 0x01, 0x00, // raw_body (field 5) is skipped
        ];
        let r = RateLimitResponse::decode_bytes(&bytes).unwrap();
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        let s = &r.statuses[0];
        assert_eq!(s.code, Code::OverLimit as i32);
        assert_eq!(
            s.current_limit,
            Some(RateLimit {
                requests_per_unit: 5,
                unit: 3,
                name: String::new()
            })
        );
        assert_eq!(s.limit_remaining, 0);
        assert_eq!(
            s.duration_until_reset,
            Some(Duration {
                seconds: 42,
                nanos: 0
            })
        );
        assert_eq!(r.response_headers_to_add[0].key, "a");
        assert_eq!(r.response_headers_to_add[0].value, "bc");
    }

    #[test]
    fn messages_round_trip() {
        let req = RateLimitRequest {
            domain: "aura-guard".into(),
            descriptors: vec![
                RateLimitDescriptor::with_hits(&[("route", "login"), ("ip", "::1")], 1),
                RateLimitDescriptor::with_hits(&[("route", "login")], 0),
            ],
            hits_addend: 0,
        };
        assert_eq!(
            RateLimitRequest::decode(req.encode_to_bytes().as_slice()).unwrap(),
            req
        );
        let resp = RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: vec![DescriptorStatus {
                code: Code::Ok as i32,
                current_limit: Some(RateLimit {
                    requests_per_unit: 4_294_967_295,
                    unit: 4,
                    name: "n".into(),
                }),
                limit_remaining: 4_294_967_290,
                duration_until_reset: Some(Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            }],
            response_headers_to_add: vec![],
            request_headers_to_add: vec![],
        };
        assert_eq!(
            RateLimitResponse::decode_bytes(&resp.encode_to_vec()).unwrap(),
            resp
        );
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(RateLimitResponse::decode_bytes(&[0x12, 0x10, 0x00]).is_err());
    }
}
