//! RFC 3339 timestamps in UTC without a date library (runc's `created` and log times).

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's civil_from_days.
fn civil(days: i64) -> (i64, u32, u32) {
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

fn parts(t: SystemTime) -> (String, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, da) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (
        format!(
            "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        ),
        d.subsec_nanos(),
    )
}

/// `2019-05-21T08:35:51Z`.
pub fn rfc3339_secs(t: SystemTime) -> String {
    format!("{}Z", parts(t).0)
}

/// `2019-05-21T08:35:51.382141418Z` (Go's RFC3339Nano, as runc prints `created`).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let (s, n) = parts(t);
    if n == 0 {
        return format!("{s}Z");
    }
    let frac = format!("{n:09}");
    format!("{s}.{}Z", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::new(1_558_427_751, 382_141_418);
        assert_eq!(rfc3339_nanos(t), "2019-05-21T08:35:51.382141418Z");
        assert_eq!(rfc3339_secs(t), "2019-05-21T08:35:51Z");
        assert_eq!(rfc3339_secs(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_secs(leap), "2000-02-29T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_558_427_751, 500_000_000);
        assert_eq!(rfc3339_nanos(t), "2019-05-21T08:35:51.5Z");
    }
}
