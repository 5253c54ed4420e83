//! Time as people read it.

/// Formats unix seconds as UTC, e.g. `2026-11-21 21:17:09 UTC`.
pub fn format_time(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| at.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_seconds() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00 UTC");
    }
}
