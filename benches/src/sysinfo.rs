//! A one-line description of the machine for the report header.

use std::time::{SystemTime, UNIX_EPOCH};

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// CPU model name from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// Number of CPUs this process may use (as `nproc` prints).
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Kernel name and release, as `uname -sr` prints.
pub fn kernel() -> String {
    let sys = read_trimmed("/proc/sys/kernel/ostype").unwrap_or_else(|| "Linux".into());
    let rel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into());
    format!("{sys} {rel}")
}

/// The current clock source (`tsc`, `kvm-clock`, ...): timing is cheap only
/// with a vDSO-capable one.
pub fn clocksource() -> String {
    read_trimmed("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .unwrap_or_else(|| "unknown".into())
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date
/// (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD hh:mm:ss UTC` for a Unix time.
pub fn format_utc(unix_secs: i64) -> String {
    let (y, mo, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// The current time, formatted by [`format_utc`].
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// `CPU model, nproc N, kernel, date, clocksource`.
pub fn machine_line() -> String {
    format!(
        "{} | nproc {} | {} | {} | clocksource {}",
        cpu_model(),
        nproc(),
        kernel(),
        now_utc(),
        clocksource()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_709_210_096), "2024-02-29 12:34:56 UTC");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn machine_line_mentions_the_kernel() {
        let line = machine_line();
        assert!(line.contains("nproc"), "{line}");
        assert!(line.contains("Linux"), "{line}");
    }
}
