//! Calendar time of a Unix time in UTC without a time-zone database (H. Hinnant's
//! civil-from-days): for media timestamps (`ferry-image`) and image dates (`export-oci`).

/// (year, month, day, hour, minute, second) in UTC.
pub fn utc(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::utc(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(super::utc(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(super::utc(1_796_308_661), (2026, 12, 3, 14, 37, 41));
    }
}
