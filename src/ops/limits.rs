//! Process limits: a proxied connection holds two file descriptors (client and backend), so the
//! open-files limit decides how many connections can exist. At start-up the soft limit is raised
//! to the hard one, and a `max_connections` that cannot fit is reported then, not as accept()
//! failures under load.

/// Descriptors kept for listeners, the admin endpoint, discovery and logs.
const RESERVED_FDS: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Checks that `max_connections` fits in `nofile`; the error says what to change.
pub fn check_connection_capacity(max_connections: usize, nofile: u64) -> Result<(), String> {
    let needed = max_connections as u64 * 2 + RESERVED_FDS;
    if needed > nofile {
        let fits = nofile.saturating_sub(RESERVED_FDS) / 2;
        return Err(format!(
            "`max_connections` = {max_connections} needs {needed} file descriptors (2 per connection + {RESERVED_FDS}) but the open-files limit is {nofile}: lower max_connections to at most {fits} or raise the hard limit (ulimit -Hn, LimitNOFILE=)"
        ));
    }
    Ok(())
}

/// [`check_connection_capacity`] for several routes, whose connection caps add up.
pub fn check_routes_capacity(routes: &[(&str, usize)], nofile: u64) -> Result<(), String> {
    if let [(_, max_connections)] = routes {
        return check_connection_capacity(*max_connections, nofile);
    }
    let total: usize = routes.iter().map(|(_, n)| n).sum();
    let needed = total as u64 * 2 + RESERVED_FDS;
    if needed > nofile {
        let fits = nofile.saturating_sub(RESERVED_FDS) / 2;
        let each: Vec<String> = routes
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        return Err(format!(
            "the routes' `max_connections` ({}) add up to {total}, which needs {needed} file descriptors (2 per connection + {RESERVED_FDS}) but the open-files limit is {nofile}: lower max_connections (at the top level or per route) so they add up to at most {fits}, or raise the hard limit (ulimit -Hn, LimitNOFILE=)",
            each.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_capacity_adds_the_routes_up() {
        assert!(check_routes_capacity(&[("rw", 4000), ("ro", 4000)], 20000).is_ok());
        let err =
            check_routes_capacity(&[("rw", 4096), ("ro", 4096), ("b", 4096)], 20000).unwrap_err();
        assert!(
            err.contains("(rw 4096, ro 4096, b 4096) add up to 12288"),
            "{err}"
        );
        assert!(err.contains("at most 9968"), "{err}");
        let one = check_routes_capacity(&[("default", 10000)], 20000).unwrap_err();
        assert_eq!(one, check_connection_capacity(10000, 20000).unwrap_err());
    }

    #[test]
    fn capacity_check_names_the_fix() {
        assert!(check_connection_capacity(8000, 20000).is_ok());
        let err = check_connection_capacity(10000, 20000).unwrap_err();
        assert!(err.contains("at most 9968"), "{err}");
    }
}
