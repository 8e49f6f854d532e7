//! The file-descriptor limit, which bounds how many connections the
//! process can hold.

/// Descriptors kept out of the connection cap: the store, the listeners,
/// log files, the runtime's own, and slack for connections being closed.
const RESERVED: u64 = 64;

/// What raising the soft limit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do: the soft limit is often a
/// legacy 1,024 that a proxy holding thousands of connections outgrows, and
/// the hard limit is what the operator granted.
#[cfg(target_os = "linux")]
pub fn raise_to_hard() -> std::io::Result<Raised> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited; the kernel never grants that for descriptors,
    // so an unlimited soft limit is left alone.
    let Some(before) = limit.current else {
        return Ok(Raised {
            before: u64::MAX,
            now: u64::MAX,
        });
    };
    let Some(hard) = limit.maximum.filter(|&hard| hard > before) else {
        return Ok(Raised {
            before,
            now: before,
        });
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    Ok(Raised { before, now: hard })
}

#[cfg(not(target_os = "linux"))]
pub fn raise_to_hard() -> std::io::Result<Raised> {
    Err(std::io::Error::other("not supported on this system"))
}

/// The soft `RLIMIT_NOFILE` now, if it can be read.
fn soft_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The default cap on client connections: half of what the descriptor
/// limit leaves after [`RESERVED`], since each client connection may use an
/// upstream connection of its own. 1,024 where the limit cannot be read.
pub fn default_max_connections() -> usize {
    max_connections_for(soft_limit())
}

fn max_connections_for(limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => (limit.saturating_sub(RESERVED) / 2).clamp(1, usize::MAX as u64) as usize,
        None => 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_upstream_connections_and_the_store() {
        assert_eq!(max_connections_for(Some(256)), 96);
        assert_eq!(max_connections_for(Some(1024)), 480);
        assert_eq!(max_connections_for(Some(1_048_576)), 524_256);
        assert_eq!(max_connections_for(Some(10)), 1);
        assert_eq!(max_connections_for(None), 1024);
    }
}
