//! The application collector: scrapes a local Prometheus endpoint (an app on
//! `http://localhost:8080/metrics`) and imports the series it is told to.
//! Unlabeled ones become attributes of the agent's row, so they aggregate.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::{textfile, Collector, CollectorError, MetricFamily};

pub struct ApplicationCollector {
    /// `http://host:port/path`; plain HTTP to a local endpoint.
    pub url: String,
    /// Metric names to import; the rest of the app's exposition is dropped.
    pub import: Vec<String>,
    pub timeout: Duration,
}

fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    Some((host.to_string(), path.to_string()))
}

impl ApplicationCollector {
    fn fetch(&self) -> Result<String, CollectorError> {
        let io = |e: std::io::Error| CollectorError::Io {
            what: self.url.clone(),
            source: e,
        };
        let (host, path) = split_url(&self.url).ok_or_else(|| {
            CollectorError::Proc(format!(
                "{}: only http://host:port/path URLs are supported",
                self.url
            ))
        })?;
        let addr = host
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| CollectorError::Proc(format!("{}: no address", self.url)))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain;version=0.0.4\r\nUser-Agent: astrolabe\r\n\r\n");
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        // Bounded: an application exposition larger than 16 MiB is refused.
        stream.take(16 << 20).read_to_end(&mut raw).map_err(io)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
            CollectorError::Proc(format!("{}: malformed HTTP response", self.url))
        })?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(CollectorError::Proc(format!(
                "{}: HTTP status {status}",
                self.url
            )));
        }
        Ok(body.to_string())
    }
}

impl Collector for ApplicationCollector {
    fn name(&self) -> &'static str {
        "application"
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let body = self.fetch()?;
        let families = textfile::parse(&self.url, &body)?;
        Ok(families
            .into_iter()
            .filter(|f| self.import.contains(&f.name))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn imports_only_the_named_series_from_a_local_endpoint() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let body = "# TYPE app_queue_depth gauge\napp_queue_depth 42\napp_other 1\nhttp_requests_total{code=\"200\"} 9\n";
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}"
                );
            }
        });
        let c = ApplicationCollector {
            url: format!("http://127.0.0.1:{port}/metrics"),
            import: vec!["app_queue_depth".into(), "http_requests_total".into()],
            timeout: Duration::from_secs(2),
        };
        let fams = c.collect().unwrap();
        assert_eq!(fams.len(), 2);
        assert_eq!(
            fams.iter()
                .find(|f| f.name == "app_queue_depth")
                .unwrap()
                .unlabeled(),
            Some(42.0)
        );
        assert!(!fams.iter().any(|f| f.name == "app_other"));
        let _ = c.collect();
        server.join().unwrap();
        let down = ApplicationCollector {
            url: format!("http://127.0.0.1:{port}/metrics"),
            import: vec![],
            timeout: Duration::from_millis(300),
        };
        assert!(down.collect().is_err());
        let bad = ApplicationCollector {
            url: "https://x/metrics".into(),
            import: vec![],
            timeout: Duration::from_secs(1),
        };
        assert!(bad.collect().unwrap_err().to_string().contains("http://"));
    }
}
