//! Resident memory of the running bench process, shared by the benches
//! that report memory (each bench is its own crate, so it is included with
//! `#[path]`).

/// Resident memory of this process in bytes, from /proc (Linux; 0 elsewhere).
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
