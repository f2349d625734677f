//! Which cgroup the programs attach to: a configured directory, or the root of the cgroup v2
//! hierarchy found in `/proc/self/mountinfo` (on a hybrid host, where the v1 controllers own
//! `/sys/fs/cgroup/*`, that is the `cgroup2` mount, usually `/sys/fs/cgroup/unified`).
//!
//! A program attached to a cgroup runs for sockets created by processes in that cgroup and
//! all its descendants; the root therefore means every process of the host (every process is
//! in some cgroup of the v2 hierarchy, also when its controllers are v1). A socket belongs to
//! the cgroup its creator was in when it was created: moving a process later affects only the
//! sockets it creates afterwards.
#![forbid(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use super::FastPathError;
use super::sys;

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// `CGROUP2_SUPER_MAGIC` (include/uapi/linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf, FastPathError> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(FastPathError::MountInfo)?;
    parse_mountinfo(&text).ok_or(FastPathError::NoCgroup2)
}

/// The first mount whose file system type is `cgroup2`.
///
/// A mountinfo line is `id parent major:minor root mountpoint options [optional…] - fstype
/// source superoptions`; the optional fields vary, hence the search for the `-` separator.
fn parse_mountinfo(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split(' ').nth(4)?;
        Some(PathBuf::from(unescape(mount_point)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens `path` (or the cgroup v2 root) and checks that it is a cgroup v2 directory; returns
/// the path used and the open directory, whose fd the links attach to.
pub(crate) fn open(path: Option<&Path>) -> Result<(PathBuf, File), FastPathError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => cgroup2_root()?,
    };
    let dir = File::open(&path).map_err(|source| FastPathError::CgroupOpen {
        path: path.clone(),
        source,
    })?;
    use std::os::fd::AsFd;
    let magic = sys::fs_magic(dir.as_fd()).map_err(|source| FastPathError::CgroupOpen {
        path: path.clone(),
        source,
    })?;
    if magic != CGROUP2_SUPER_MAGIC {
        return Err(FastPathError::NotCgroup2 { path });
    }
    Ok((path, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's CI host: hybrid, v1 controllers plus cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    /// A pure v2 host (systemd's unified layout) with optional fields.
    const UNIFIED: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
26 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn finds_the_cgroup2_mount_on_hybrid_and_unified_hosts() {
        assert_eq!(
            parse_mountinfo(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_mountinfo(UNIFIED),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn v1_only_hosts_and_garbage_have_none() {
        let v1: String = HYBRID.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(parse_mountinfo(&v1), None);
        assert_eq!(parse_mountinfo("nonsense\n - \n\n- cgroup2"), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        let line = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(line), Some(PathBuf::from("/mnt/cg two")));
        assert_eq!(unescape("a\\13"), "a\\13");
    }
}
