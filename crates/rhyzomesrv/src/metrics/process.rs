//! The daemon's own process figures, from `/proc/self` (Linux), under the names every
//! Prometheus client uses (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, ...), so that standard dashboards show them.

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// Reads this process's figures; `None` where `/proc` is not mounted or unreadable.
pub fn read() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf only reads configuration values.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY)
        .then_some(limit.rlim_cur);
    parse(
        &stat,
        &statm,
        &boot_time,
        u64::try_from(ticks).ok()?,
        u64::try_from(page).ok()?,
        open_fds,
        max_fds,
    )
}

/// The figures from the texts of `/proc/self/stat`, `/proc/self/statm` and `/proc/stat`.
fn parse(
    stat: &str,
    statm: &str,
    proc_stat: &str,
    ticks_per_second: u64,
    page_size: u64,
    open_fds: u64,
    max_fds: Option<u64>,
) -> Option<ProcessFigures> {
    // The command name (field 2) may contain spaces and parentheses: fields are counted
    // from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = ticks_per_second.max(1) as f64;
    let cpu_seconds = (field(14)? + field(15)?) as f64 / ticks;
    let boot = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    let start_time_seconds = boot as f64 + field(22)? as f64 / ticks;
    let resident_pages = statm.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(ProcessFigures {
        cpu_seconds,
        resident_bytes: resident_pages * page_size,
        open_fds,
        max_fds,
        start_time_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_are_parsed_even_with_a_strange_command_name() {
        // A real /proc/self/stat line, with a command name holding ") (".
        let stat = "4242 (rhyz) (srv) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    150 50 0 0 20 0 9 0 12345 100000000 6000 18446744073709551615";
        let statm = "30000 6000 1500 400 0 9000 0\n";
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        let p = parse(stat, statm, proc_stat, 100, 4096, 17, Some(1024)).unwrap();
        assert_eq!(p.cpu_seconds, 2.0);
        assert_eq!(p.resident_bytes, 6000 * 4096);
        assert_eq!(p.start_time_seconds, 1_700_000_000.0 + 123.45);
        assert_eq!((p.open_fds, p.max_fds), (17, Some(1024)));
        assert_eq!(parse("garbage", statm, proc_stat, 100, 4096, 1, None), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let p = read().expect("/proc/self is readable on Linux");
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
    }
}
