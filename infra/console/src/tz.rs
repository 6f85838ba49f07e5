//! Times in the operator's time zone (a cookie set on the settings page; UTC by default), from
//! the tz database jiff bundles.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The operator's zone: its IANA name and rules.
#[derive(Clone, Debug)]
pub struct Zone {
    pub name: String,
    tz: TimeZone,
}

impl Zone {
    pub fn utc() -> Self {
        Self {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    /// The zone named `name`, if the tz database knows it.
    pub fn named(name: &str) -> Option<Self> {
        if name == "UTC" {
            return Some(Self::utc());
        }
        let tz = jiff::tz::db().get(name).ok()?;
        Some(Self {
            name: name.to_owned(),
            tz,
        })
    }

    /// `2026-11-28 06:00:00 MST` for Unix milliseconds.
    pub fn format_ms(&self, ms: i64) -> String {
        match Timestamp::from_millisecond(ms) {
            Ok(t) => self.format(t),
            Err(_) => ms.to_string(),
        }
    }

    /// An RFC 3339 time in this zone; text that is not one is shown as it is.
    pub fn format_text(&self, rfc3339: &str) -> String {
        match rfc3339.parse::<Timestamp>() {
            Ok(t) => self.format(t),
            Err(_) => rfc3339.to_owned(),
        }
    }

    fn format(&self, t: Timestamp) -> String {
        t.to_zoned_datetime(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    /// A `datetime-local` value (`2026-11-28T06:00`, seconds optional) or an RFC 3339 time, read
    /// in this zone, as a `time` instant (what the DLQ filters use).
    pub fn parse_local(&self, text: &str) -> Result<time::OffsetDateTime, String> {
        let text = text.trim();
        let ts = match text.parse::<Timestamp>() {
            Ok(t) => t,
            Err(_) => text
                .parse::<jiff::civil::DateTime>()
                .and_then(|dt| dt.to_zoned_datetime(self.tz.clone()))
                .map(|z| z.timestamp())
                .map_err(|_| {
                    format!(
                        "`{text}` is not a time (e.g. 2026-11-28T06:00, in {})",
                        self.name
                    )
                })?,
        };
        time::OffsetDateTime::from_unix_timestamp_nanos(ts.as_nanosecond())
            .map_err(|e| format!("`{text}`: {e}"))
    }
}

/// Every zone the operator can choose, UTC first, then by name.
pub fn all_zones() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::db()
        .available()
        .map(|n| n.to_string())
        .filter(|n| n != "UTC" && !n.starts_with("Etc/") && n.contains('/'))
        .collect();
    names.sort();
    names.dedup();
    names.insert(0, "UTC".into());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_shows_local_time_with_its_abbreviation_and_reads_local_input() {
        let denver = Zone::named("America/Denver").expect("bundled tz database");
        assert_eq!(
            denver.format_text("2026-11-28T13:00:00Z"),
            "2026-11-28 06:00:00 MST"
        );
        assert_eq!(
            denver.format_ms(1_783_252_800_000),
            "2026-07-05 06:00:00 MDT"
        );
        let t = denver
            .parse_local("2026-11-28T06:00")
            .expect("datetime-local");
        assert_eq!(t.unix_timestamp(), 1_795_870_800);
        assert!(denver.parse_local("yesterday").is_err());
        assert!(Zone::named("Mars/Olympus").is_none());
        assert!(all_zones().iter().any(|z| z == "America/Denver"));
        assert_eq!(all_zones()[0], "UTC");
    }
}
