//! Go `time.Duration` text: parsing exactly as Go's `time.ParseDuration` (Go standard
//! library `time/format.go`), which Consul calls for `?wait` (Consul: agent/http.go
//! parseWait), `?max_stale`, check `Interval`/`Timeout`/`TTL` and session TTLs; and formatting
//! the way Go's `Duration.String` prints it (`10s`, `1m0s`, `500ms`), which is what Consul
//! echoes back in `Interval`/`Timeout`/`TTL`.
//!
//! Grammar (`[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`): an optional sign, then one or more
//! `<number><unit>` groups with units `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`,
//! `m`, `h`; a number may have a fraction (`1.5s`, `.5s`, `1.s`); the lone string `0` (after
//! the sign) is zero. Everything else is an error, with Go's own message: `90` →
//! `time: missing unit in duration "90"`, `1m 30s` → `time: unknown unit "m " in duration
//! "1m 30s"`, `` → `time: invalid duration ""`. The value must fit in an `int64` of
//! nanoseconds.

use std::time::Duration;

/// Parses a Go duration into signed nanoseconds, or Go's error text.
// Go: time/format.go ParseDuration, leadingInt, leadingFraction, unitMap, quote.
pub fn parse_go(s: &str) -> Result<i64, String> {
    let orig = s;
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let mut b = s.as_bytes();
    let mut neg = false;
    if let Some(&c) = b.first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        b = &b[1..];
    }
    if b == b"0" {
        return Ok(0);
    }
    if b.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut d: u64 = 0;
    while !b.is_empty() {
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // leadingInt
        let mut v: u64 = 0;
        let mut i = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(b[i] - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        let pre = i > 0;
        b = &b[i..];
        // leadingFraction
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if b.first() == Some(&b'.') {
            b = &b[1..];
            let mut i = 0;
            let mut overflow = false;
            while i < b.len() && b[i].is_ascii_digit() {
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(b[i] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            post = i > 0;
            b = &b[i..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        let mut i = 0;
        while i < b.len() && !(b[i] == b'.' || b[i].is_ascii_digit()) {
            i += 1;
        }
        if i == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit_bytes = &b[..i];
        b = &b[i..];
        let unit: u64 = match unit_bytes {
            b"ns" => 1,
            // "µs" is U+00B5 (micro sign), "μs" U+03BC (Greek mu), both UTF-8 encoded.
            b"us" | [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60 * 1_000_000_000,
            b"h" => 3600 * 1_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(&String::from_utf8_lossy(unit_bytes)),
                    go_quote(orig)
                ));
            }
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        d += v;
        if d > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((d as i128).wrapping_neg() as i64);
    }
    if d > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(d as i64)
}

/// Go's `time.quote`: `"` + s + `"`, with `"` and `\` escaped and bytes outside printable
/// ASCII written as `\xNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if (c as u32) >= 0x80 || c < ' ' {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Parses a Go duration that must not be negative (check intervals, TTLs, the CLI). Same
/// grammar as [`parse_go`].
pub fn parse(s: &str) -> Option<Duration> {
    let ns = parse_go(s).ok()?;
    u64::try_from(ns).ok().map(Duration::from_nanos)
}

/// Formats like Go's `Duration.String()`.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", trim_frac(ns as f64 / 1e3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", trim_frac(ns as f64 / 1e6));
    }
    let total_secs = d.as_secs();
    let frac_ns = d.subsec_nanos();
    let h = total_secs / 3600;
    let m = (total_secs % 3600) / 60;
    let s = total_secs % 60;
    let secs = if frac_ns == 0 {
        format!("{s}")
    } else {
        let frac = format!("{frac_ns:09}");
        format!("{s}.{}", frac.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

fn trim_frac(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0');
    s.trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(format(Duration::from_secs(60)), "1m0s");
        assert_eq!(format(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
