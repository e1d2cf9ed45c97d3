//! What `--otlp.*` says: endpoint, protocol, interval.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::OtlpError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC, usually port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies, usually port 4318.
    HttpProtobuf,
}

impl FromStr for Protocol {
    type Err = OtlpError;
    fn from_str(s: &str) -> Result<Protocol, OtlpError> {
        // The spellings of OTEL_EXPORTER_OTLP_PROTOCOL.
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" | "http" => Ok(Protocol::HttpProtobuf),
            other => Err(OtlpError::Protocol(other.to_string())),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        })
    }
}

#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// `http://host:4317` (gRPC) or `http://host:4318` (HTTP; `/v1/metrics`
    /// is added when the URL has no path).
    pub endpoint: String,
    pub protocol: Protocol,
    pub interval: Duration,
    /// Longest one export may take.
    pub timeout: Duration,
}

impl OtlpOptions {
    pub fn new(endpoint: &str, protocol: Protocol, interval: Duration) -> OtlpOptions {
        OtlpOptions {
            endpoint: endpoint.trim().to_string(),
            protocol,
            interval,
            // An export slower than its interval would pile up behind itself.
            timeout: interval.min(Duration::from_secs(10)),
        }
    }

    /// The URL the exporter sends to, checked: an `http://` URL with a host.
    /// TLS is not built in (a local Collector is the usual hop).
    pub fn signal_endpoint(&self) -> Result<String, OtlpError> {
        let bad = |reason: &str| OtlpError::Endpoint {
            endpoint: self.endpoint.clone(),
            reason: reason.to_string(),
        };
        let rest = if let Some(rest) = self.endpoint.strip_prefix("http://") {
            rest
        } else if self.endpoint.starts_with("https://") {
            return Err(bad(
                "https is not supported by this build; send to a local OpenTelemetry Collector over http://",
            ));
        } else {
            return Err(bad("expected a URL like http://collector:4317"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.starts_with(':') {
            return Err(bad("the URL has no host"));
        }
        if let Some((_, port)) = authority.rsplit_once(':') {
            if !authority.ends_with(']') && port.parse::<u16>().is_err() {
                return Err(bad("the port is not a number"));
            }
        }
        if rest.contains(char::is_whitespace) {
            return Err(bad("the URL contains spaces"));
        }
        let url = format!("http://{authority}{path}");
        Ok(match self.protocol {
            Protocol::HttpProtobuf if path.is_empty() || path == "/" => {
                format!("http://{authority}/v1/metrics")
            }
            _ => url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str, p: Protocol) -> Result<String, OtlpError> {
        OtlpOptions::new(url, p, Duration::from_secs(10)).signal_endpoint()
    }

    #[test]
    fn endpoints_are_checked_and_completed() {
        assert_eq!(
            ep("http://collector:4318", Protocol::HttpProtobuf).unwrap(),
            "http://collector:4318/v1/metrics"
        );
        assert_eq!(
            ep("http://collector:4318/custom/path", Protocol::HttpProtobuf).unwrap(),
            "http://collector:4318/custom/path"
        );
        assert_eq!(
            ep("http://127.0.0.1:4317", Protocol::Grpc).unwrap(),
            "http://127.0.0.1:4317"
        );
        assert!(ep("https://x:4317", Protocol::Grpc)
            .unwrap_err()
            .to_string()
            .contains("https is not supported"));
        assert!(ep("collector:4317", Protocol::Grpc).is_err());
        assert!(ep("http://:4317", Protocol::Grpc).is_err());
        assert!(ep("http://x:port", Protocol::Grpc).is_err());
    }

    #[test]
    fn protocols_parse_like_the_otel_variable() {
        assert_eq!("grpc".parse::<Protocol>().unwrap(), Protocol::Grpc);
        assert_eq!(
            "http/protobuf".parse::<Protocol>().unwrap(),
            Protocol::HttpProtobuf
        );
        assert!("http/json".parse::<Protocol>().is_err());
    }
}
