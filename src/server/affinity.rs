//! Which CPU each worker thread runs on.

use std::io;

/// The CPU for worker `index`: the workers take the `allowed` CPUs in
/// turn, so that no two share one until every CPU has a worker.
pub(super) fn cpu_for(index: usize, allowed: &[usize]) -> Option<usize> {
    match allowed.len() {
        0 => None,
        n => Some(allowed[index % n]),
    }
}

/// The CPUs this thread may run on (the process's mask, which `taskset` or
/// a container's cpuset may have narrowed), in ascending order.
#[cfg(target_os = "linux")]
pub(super) fn allowed_cpus() -> io::Result<Vec<usize>> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    let allowed = sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&cpu| allowed.is_set(cpu))
        .collect())
}

/// Keeps the calling thread on `cpu` from now on.
#[cfg(target_os = "linux")]
pub(super) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut only = CpuSet::new();
    only.set(cpu);
    Ok(sched_setaffinity(None, &only)?)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::cpu_for;

    #[test]
    fn workers_take_the_allowed_cpus_in_turn() {
        let allowed = [2, 3, 6];
        let cpus: Vec<_> = (0..7).map(|index| cpu_for(index, &allowed)).collect();
        assert_eq!(cpus, [2, 3, 6, 2, 3, 6, 2].map(Some));
        assert_eq!(cpu_for(0, &[]), None);
    }
}
