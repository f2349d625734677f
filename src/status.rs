//! What discovery last saw, for `GET /status`: the source, the time of the last usable answer
//! and the last error. Written by the discovery loop (a few times per second at most), read by
//! the admin endpoint; a plain mutex is enough.

use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Value, json};

#[derive(Debug, Default)]
pub struct DiscoveryStatus {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    source: String,
    last_success: Option<SystemTime>,
    last_error: Option<(SystemTime, String)>,
}

/// RFC 3339 time, or null.
pub fn rfc3339(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_millis(t).to_string())
    })
}

impl DiscoveryStatus {
    pub fn set_source(&self, source: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.source = source.to_owned();
        }
    }

    pub fn success(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.last_success = Some(SystemTime::now());
        }
    }

    pub fn error(&self, error: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.last_error = Some((SystemTime::now(), error.to_owned()));
        }
    }

    /// JSON for `/status`.
    pub fn to_json(&self) -> Value {
        let Ok(inner) = self.inner.lock() else {
            return Value::Null;
        };
        json!({
            "source": inner.source,
            "last_success": rfc3339(inner.last_success),
            "last_error": inner.last_error.as_ref().map(|(_, e)| e.clone()),
            "last_error_at": rfc3339(inner.last_error.as_ref().map(|(t, _)| *t)),
        })
    }
}
