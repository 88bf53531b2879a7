//! When a sync runs by itself under `sallyport serve`: `every 15m` (s, m, h, d), a cron
//! expression in UTC (`{cron: "0 */2 * * *"}`), or never (manual runs only).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A sync's schedule, as written in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScheduleSpec {
    /// `every 15m`.
    Every(String),
    /// `{cron: "0 */2 * * *"}`, in UTC.
    Cron(CronSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSpec {
    pub cron: String,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// Parses a schedule, or says what is wrong with it.
    pub fn parse(spec: &ScheduleSpec) -> Result<Schedule, String> {
        match spec {
            ScheduleSpec::Every(text) => {
                let rest = text
                    .trim()
                    .strip_prefix("every")
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| {
                        format!("schedule `{text}` is not like \"every 15m\" (s, m, h or d) or {{cron: \"0 */2 * * *\"}}")
                    })?;
                let d =
                    crate::parse_duration(rest).map_err(|e| format!("schedule `{text}`: {e}"))?;
                if d < Duration::from_secs(1) {
                    return Err(format!("schedule `{text}`: the shortest interval is 1s"));
                }
                Ok(Schedule::Every(d))
            }
            ScheduleSpec::Cron(c) => croner::Cron::from_str(&c.cron)
                .map(|cron| Schedule::Cron(Box::new(cron)))
                .map_err(|e| format!("schedule cron `{}`: {e}", c.cron)),
        }
    }

    /// The first time the sync is due after a run that started at `last` (or, with no run yet,
    /// after `since`, when the scheduler started).
    pub fn next_after(&self, last: Option<DateTime<Utc>>, since: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(d) => match last {
                Some(l) => l + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX),
                None => since,
            },
            Schedule::Cron(c) => c
                .find_next_occurrence(&last.unwrap_or(since), false)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_and_cron() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 7, 0).unwrap();
        let every = Schedule::parse(&ScheduleSpec::Every("every 15m".into())).unwrap();
        assert_eq!(
            every.next_after(None, t),
            t,
            "a schedule with no run yet is due now"
        );
        assert_eq!(
            every.next_after(Some(t), t),
            t + chrono::Duration::minutes(15)
        );
        let cron = Schedule::parse(&ScheduleSpec::Cron(CronSpec {
            cron: "0 */2 * * *".into(),
        }))
        .unwrap();
        assert_eq!(
            cron.next_after(Some(t), t),
            Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
        );
        assert!(Schedule::parse(&ScheduleSpec::Every("hourly".into())).is_err());
        assert!(Schedule::parse(&ScheduleSpec::Every("every 5 parsecs".into())).is_err());
        assert!(Schedule::parse(&ScheduleSpec::Cron(CronSpec {
            cron: "61 * * * *".into()
        }))
        .is_err());
    }
}
