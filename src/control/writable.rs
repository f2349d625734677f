//! The one read-only check, shared by fencing (`verify_writable`) and the `check` command.
//!
//! Both ask the server the same question (`SHOW GLOBAL VARIABLES` for `read_only`,
//! `super_read_only` and `version`) and decide the same way: a server is writable when
//! `read_only` is off and `super_read_only` (MySQL only; MariaDB has no such variable) is off or
//! absent. Values are read as text: `ON`/`OFF`, `1`/`0`, and MariaDB 11's `NO_LOCK` /
//! `NO_LOCK_NO_ADMIN` (read-only variants) are all understood, and nothing is converted in a
//! way that can panic on an odd answer.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

/// The statement both callers send. Read-only.
pub const SHOW_VARIABLES: &str =
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version', 'read_only', 'super_read_only')";

/// What the server reported; a variable it did not report is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerVars {
    pub version: Option<String>,
    /// `@@global.read_only`: `OFF`/`ON` (MariaDB ≥ 11 also `NO_LOCK`, `NO_LOCK_NO_ADMIN`).
    pub read_only: Option<String>,
    /// `@@global.super_read_only`: MySQL only.
    pub super_read_only: Option<String>,
}

impl ServerVars {
    /// Reads the variables over `conn`.
    pub async fn read(conn: &mut Conn) -> Result<ServerVars, mysql_async::Error> {
        let rows: Vec<Row> = conn.query(SHOW_VARIABLES).await?;
        let mut vars = ServerVars::default();
        for row in &rows {
            let (Some(name), value) = (
                row.as_ref(0).and_then(value_text),
                row.as_ref(1).and_then(value_text),
            ) else {
                continue;
            };
            match name.to_ascii_lowercase().as_str() {
                "read_only" => vars.read_only = value,
                "super_read_only" => vars.super_read_only = value,
                "version" => vars.version = value,
                _ => {}
            }
        }
        Ok(vars)
    }

    /// `Some(true)` when writes are accepted (even from a user with SUPER), `None` when the
    /// server did not report `read_only`.
    pub fn writable(&self) -> Option<bool> {
        writable(self.read_only.as_deref(), self.super_read_only.as_deref())
    }

    /// `read_only=X[, super_read_only=Y]`, for reasons and logs.
    pub fn describe_read_only(&self) -> String {
        describe_read_only(self.read_only.as_deref(), self.super_read_only.as_deref())
    }

    /// Whether the server is MariaDB (which has no `super_read_only` and other status commands).
    pub fn is_mariadb(&self) -> bool {
        self.version
            .as_deref()
            .is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"))
    }
}

/// The writability rule on the two variables' text values.
pub fn writable(read_only: Option<&str>, super_read_only: Option<&str>) -> Option<bool> {
    let read_only = read_only?;
    Some(!is_on(read_only) && !super_read_only.is_some_and(is_on))
}

/// `read_only=X[, super_read_only=Y]`.
pub fn describe_read_only(read_only: Option<&str>, super_read_only: Option<&str>) -> String {
    let ro = read_only.unwrap_or("?");
    match super_read_only {
        Some(sro) => format!("read_only={ro}, super_read_only={sro}"),
        None => format!("read_only={ro}"),
    }
}

/// `ON`-like values of a boolean-ish server variable: anything but `OFF`/`0` (so `NO_LOCK`,
/// `NO_LOCK_NO_ADMIN` and anything unexpected count as read-only: the safe side).
pub fn is_on(value: &str) -> bool {
    let v = value.trim();
    !(v.eq_ignore_ascii_case("OFF") || v == "0")
}

/// A server value as text (the text protocol sends everything as bytes or NULL).
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other @ (Value::Date(..) | Value::Time(..)) => Some(other.as_sql(true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writability_rule() {
        assert_eq!(writable(Some("OFF"), None), Some(true));
        assert_eq!(writable(Some("0"), Some("0")), Some(true));
        assert_eq!(writable(Some("ON"), None), Some(false));
        assert_eq!(writable(Some("NO_LOCK"), None), Some(false));
        assert_eq!(writable(Some("no_lock_no_admin"), None), Some(false));
        assert_eq!(writable(Some("OFF"), Some("ON")), Some(false));
        assert_eq!(writable(None, Some("OFF")), None);
        assert_eq!(
            describe_read_only(Some("OFF"), Some("ON")),
            "read_only=OFF, super_read_only=ON"
        );
    }
}
