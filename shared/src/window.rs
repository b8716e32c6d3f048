//! Deployment windows and freezes: when a rollout may go on. Pure: the time is an
//! argument.
//!
//! A [`Window`] allows or denies rollouts of some services, or to some hosts, during a
//! one-off span (two instants) or a weekly recurring one (days, a local start and end,
//! an IANA time zone from the tz database bundled into the build, so a host without
//! `/usr/share/zoneinfo` reads the same rules). [`hold`] says whether a batch of a
//! service on some hosts must wait at an instant, why, and until when:
//!
//! - a deny window (a freeze) in effect holds it until the freeze ends;
//! - when allow windows apply to it, it runs only inside one of them;
//! - otherwise it runs.
//!
//! A window applies to a batch when it names the service (or names none) and its host
//! selector matches one of the batch's hosts (or is empty). Rollbacks never ask.
//!
//! Local times follow the tz database's rules on each date. A local start or end that
//! does not exist (the clock springs forward over it) is moved forward by the length
//! of the gap (02:30 becomes 03:30 on a one-hour change); one that happens twice (the
//! clock falls back) is the earlier of the two. This is RFC 5545's and
//! JavaScript Temporal's "compatible" reading.

use std::collections::BTreeSet;
use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::model::{LabelSelector, Labels, ServiceName};

/// Whether a window lets rollouts run or stops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Rollouts it applies to run only inside it (or inside another allow window).
    Allow,
    /// A freeze: rollouts it applies to wait while it is in effect.
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// When a window is in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// From one instant (inclusive) to another (exclusive), ms since the Unix epoch.
    Once {
        /// Start.
        from_unix_ms: i64,
        /// End.
        until_unix_ms: i64,
    },
    /// Every week on `days`, from `start` to `end` local time in `time_zone`. An end
    /// at or before the start ends on the next day (22:00–06:00 runs overnight).
    Weekly {
        /// The days an occurrence starts on.
        days: Days,
        /// Local start, minutes after midnight (0..1440).
        start: u16,
        /// Local end, minutes after midnight (1..=1440; 1440 is the next midnight).
        end: u16,
        /// An IANA time zone name (`Europe/Berlin`, `UTC`).
        time_zone: String,
    },
}

/// Days of the week, Monday first (bit 0) to Sunday (bit 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Days(pub u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Days {
    /// Every day.
    pub const ALL: Days = Days(0x7f);

    /// Whether an occurrence starts on `day`.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }

    /// Reads `mon-fri`, `sat,sun`, `mon,wed-fri`, `daily` (or `*`).
    pub fn parse(text: &str) -> Result<Days, WindowError> {
        let text = text.trim().to_ascii_lowercase();
        if text == "daily" || text == "*" {
            return Ok(Days::ALL);
        }
        let day = |name: &str| {
            DAY_NAMES.iter().position(|d| *d == name.trim()).ok_or_else(|| {
                WindowError::new(format!("`{}` is not a day: use mon, tue, wed, thu, fri, sat or sun", name.trim()))
            })
        };
        let mut bits = 0u8;
        for part in text.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    // A range wraps past Sunday: fri-mon is Friday to Monday.
                    let mut d = a;
                    loop {
                        bits |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << day(part)?,
            }
        }
        Ok(Days(bits))
    }
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Days::ALL {
            return f.write_str("daily");
        }
        let names: Vec<&str> = (0..7).filter(|d| self.0 & (1 << d) != 0).map(|d| DAY_NAMES[d]).collect();
        f.write_str(&names.join(","))
    }
}

/// A deployment window or freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Its name, unique in the cluster.
    pub name: String,
    /// Allow or deny.
    pub effect: Effect,
    /// The services it applies to; empty: every service.
    pub services: BTreeSet<ServiceName>,
    /// The hosts it applies to; empty: every host.
    pub hosts: LabelSelector,
    /// When it is in effect.
    pub when: When,
    /// Why (shown when it holds a release).
    pub reason: String,
}

/// A window that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WindowError(pub String);

impl WindowError {
    fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

/// Reads a local time of day, `HH:MM` (`24:00` is the next midnight): minutes after
/// midnight.
pub fn parse_time_of_day(text: &str) -> Result<u16, WindowError> {
    let bad = || WindowError::new(format!("`{text}` is not a time of day: write HH:MM, 00:00 to 24:00"));
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Formats minutes after midnight as `HH:MM`.
pub fn format_time_of_day(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Reads an instant written in RFC 3339 with an offset (`2026-12-24T00:00:00Z`,
/// `2026-12-24T00:00:00+01:00`): ms since the Unix epoch.
pub fn parse_instant(text: &str) -> Result<i64, WindowError> {
    let ts: Timestamp = text.trim().parse().map_err(|e| {
        WindowError::new(format!(
            "`{text}` is not an instant: write an RFC 3339 date-time with its offset, like 2026-12-24T18:00:00Z ({e})"
        ))
    })?;
    Ok(ts.as_millisecond())
}

/// Formats an instant (ms since the Unix epoch) in RFC 3339, UTC.
pub fn format_instant(unix_ms: i64) -> String {
    match Timestamp::from_millisecond(unix_ms) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("{unix_ms} ms"),
    }
}

/// Looks a time zone up in the bundled tz database.
pub fn time_zone(name: &str) -> Result<TimeZone, WindowError> {
    TimeZone::get(name).map_err(|_| {
        WindowError::new(format!(
            "`{name}` is not a time zone of the tz database: use a name like Europe/Berlin or UTC"
        ))
    })
}

impl When {
    /// A weekly window from its written parts, checked.
    pub fn weekly(days: &str, start: &str, end: &str, time_zone_name: &str) -> Result<When, WindowError> {
        let days = Days::parse(days)?;
        let (start, end) = (parse_time_of_day(start)?, parse_time_of_day(end)?);
        if start >= 1440 {
            return Err(WindowError::new("a window cannot start at 24:00: start at 00:00 of the next day"));
        }
        if start == end {
            return Err(WindowError::new(format!(
                "the window starts and ends at {}: give an end after the start (24:00 for the whole day)",
                format_time_of_day(start)
            )));
        }
        time_zone(time_zone_name)?;
        Ok(When::Weekly { days, start, end, time_zone: time_zone_name.to_owned() })
    }

    /// A one-off window from its written instants, checked.
    pub fn once(from: &str, until: &str) -> Result<When, WindowError> {
        let (from_unix_ms, until_unix_ms) = (parse_instant(from)?, parse_instant(until)?);
        if until_unix_ms <= from_unix_ms {
            return Err(WindowError::new(format!("the window ends ({until}) before it starts ({from})")));
        }
        Ok(When::Once { from_unix_ms, until_unix_ms })
    }

    /// The occurrences starting on dates from `first` to `last` (local, inclusive), in
    /// order. A date whose local times cannot be resolved gives none.
    fn weekly_occurrences(
        days: Days,
        start: u16,
        end: u16,
        tz: &TimeZone,
        first: Date,
        last: Date,
    ) -> impl Iterator<Item = (i64, i64)> + '_ {
        let at = move |date: Date, minutes: u16| -> Option<i64> {
            let (date, minutes) = if minutes == 1440 { (date.tomorrow().ok()?, 0) } else { (date, minutes) };
            let local = date.at(i8::try_from(minutes / 60).ok()?, i8::try_from(minutes % 60).ok()?, 0, 0);
            Some(tz.to_ambiguous_zoned_datetime(local).compatible().ok()?.timestamp().as_millisecond())
        };
        first
            .series(jiff::Span::new().days(1))
            .take_while(move |d| *d <= last)
            .filter(move |d| days.contains(d.weekday()))
            .filter_map(move |d| {
                let from = at(d, start)?;
                let until = if end > start { at(d, end)? } else { at(d.tomorrow().ok()?, end)? };
                (until > from).then_some((from, until))
            })
    }

    /// The occurrence in effect at `now` (start, end), if any.
    pub fn in_effect(&self, now: i64) -> Option<(i64, i64)> {
        match self {
            When::Once { from_unix_ms, until_unix_ms } => {
                (*from_unix_ms <= now && now < *until_unix_ms).then_some((*from_unix_ms, *until_unix_ms))
            }
            When::Weekly { days, start, end, time_zone: name } => {
                let tz = time_zone(name).ok()?;
                let today = local_date(now, &tz)?;
                // An occurrence lasts under two days: one that started two days ago
                // has ended.
                let first = today.checked_sub(jiff::Span::new().days(2)).ok()?;
                Self::weekly_occurrences(*days, *start, *end, &tz, first, today)
                    .filter(|&(from, until)| from <= now && now < until)
                    .max_by_key(|&(_, until)| until)
            }
        }
    }

    /// The first start of an occurrence after `now`, if any.
    pub fn next_start(&self, now: i64) -> Option<i64> {
        match self {
            When::Once { from_unix_ms, .. } => (*from_unix_ms > now).then_some(*from_unix_ms),
            When::Weekly { days, start, end, time_zone: name } => {
                let tz = time_zone(name).ok()?;
                let today = local_date(now, &tz)?;
                let last = today.checked_add(jiff::Span::new().days(8)).ok()?;
                Self::weekly_occurrences(*days, *start, *end, &tz, today, last)
                    .map(|(from, _)| from)
                    .find(|&from| from > now)
            }
        }
    }
}

fn local_date(now: i64, tz: &TimeZone) -> Option<Date> {
    Some(Timestamp::from_millisecond(now).ok()?.to_zoned_datetime(tz.clone()).date())
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Once { from_unix_ms, until_unix_ms } => {
                write!(f, "from {} until {}", format_instant(*from_unix_ms), format_instant(*until_unix_ms))
            }
            When::Weekly { days, start, end, time_zone } => {
                write!(f, "{days} {}-{} {time_zone}", format_time_of_day(*start), format_time_of_day(*end))
            }
        }
    }
}

impl Window {
    /// Whether it applies to a batch of `service` on hosts with these labels.
    pub fn applies<'l>(&self, service: &ServiceName, mut hosts: impl Iterator<Item = &'l Labels>) -> bool {
        (self.services.is_empty() || self.services.contains(service))
            && (self.hosts.is_empty() || hosts.any(|labels| self.hosts.matches(labels)))
    }

    /// What it covers, in words (`payments on env=prod`).
    pub fn scope(&self) -> String {
        let services = if self.services.is_empty() {
            "every service".to_owned()
        } else {
            self.services.iter().map(ServiceName::as_str).collect::<Vec<_>>().join(", ")
        };
        if self.hosts.is_empty() { services } else { format!("{services} on hosts {}", self.hosts) }
    }
}

/// Why a batch waits, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Why, naming the windows.
    pub reason: String,
    /// When the windows let it go (ms since the Unix epoch); `None` when no window
    /// opens within the next week.
    pub until_unix_ms: Option<i64>,
}

/// How many window boundaries [`hold`] walks over to find when a batch may go.
const MAX_STEPS: usize = 64;

/// Whether the windows hold a batch of `service` on `hosts` at `now`: why, and until
/// when (the first instant no freeze covers and, when allow windows apply, one of them
/// does).
pub fn hold<'w, 'l>(
    windows: impl IntoIterator<Item = &'w Window>,
    service: &ServiceName,
    hosts: &[&'l Labels],
    now: i64,
) -> Option<Hold> {
    let applicable: Vec<&Window> = windows.into_iter().filter(|w| w.applies(service, hosts.iter().copied())).collect();
    let (allows, denies): (Vec<&Window>, Vec<&Window>) =
        applicable.iter().copied().partition(|w| w.effect == Effect::Allow);
    let frozen: Vec<&Window> = denies.iter().copied().filter(|w| w.when.in_effect(now).is_some()).collect();
    let outside = !allows.is_empty() && !allows.iter().any(|w| w.when.in_effect(now).is_some());
    if frozen.is_empty() && !outside {
        return None;
    }
    // Walk forward over freezes and closed allow windows to the first open instant.
    let mut t = now;
    let mut until = None;
    for _ in 0..MAX_STEPS {
        let frozen_until = denies.iter().filter_map(|w| w.when.in_effect(t)).map(|(_, end)| end).max();
        if let Some(end) = frozen_until {
            t = end;
            continue;
        }
        if !allows.is_empty() && !allows.iter().any(|w| w.when.in_effect(t).is_some()) {
            match allows.iter().filter_map(|w| w.when.next_start(t)).min() {
                Some(next) => {
                    t = next;
                    continue;
                }
                None => break,
            }
        }
        until = Some(t);
        break;
    }
    let mut why = Vec::new();
    for w in &frozen {
        let mut s = format!("freeze {} ({})", w.name, w.scope());
        if !w.reason.is_empty() {
            s.push_str(&format!(": {}", w.reason));
        }
        why.push(s);
    }
    if outside {
        let names: Vec<&str> = allows.iter().map(|w| w.name.as_str()).collect();
        why.push(format!("outside the allowed windows ({})", names.join(", ")));
    }
    let mut reason = format!("held by {}", why.join("; "));
    match until {
        Some(t) => reason.push_str(&format!("; goes on at {}", format_instant(t))),
        None => reason.push_str("; no window opens within a week: change the windows (flotilla policy window)"),
    }
    Some(Hold { reason, until_unix_ms: until })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        parse_instant(text).unwrap()
    }

    fn svc(name: &str) -> ServiceName {
        ServiceName::new(name)
    }

    fn window(name: &str, effect: Effect, when: When) -> Window {
        Window {
            name: name.to_owned(),
            effect,
            services: BTreeSet::new(),
            hosts: LabelSelector::default(),
            when,
            reason: String::new(),
        }
    }

    fn no_hosts() -> Vec<&'static Labels> {
        Vec::new()
    }

    #[test]
    fn days_parse_ranges_lists_and_wrapping() {
        assert_eq!(Days::parse("mon-fri").unwrap().to_string(), "mon,tue,wed,thu,fri");
        assert_eq!(Days::parse("sat, sun").unwrap().to_string(), "sat,sun");
        assert_eq!(Days::parse("fri-mon").unwrap().to_string(), "mon,fri,sat,sun");
        assert_eq!(Days::parse("daily").unwrap(), Days::ALL);
        let err = Days::parse("mon-fry").unwrap_err().to_string();
        assert!(err.contains("`fry` is not a day"), "{err}");
    }

    #[test]
    fn bad_windows_are_refused_with_what_is_wrong() {
        let e = When::weekly("mon", "9:00", "9:00", "UTC").unwrap_err().to_string();
        assert!(e.contains("starts and ends at 09:00"), "{e}");
        let e = When::weekly("mon", "25:00", "26:00", "UTC").unwrap_err().to_string();
        assert!(e.contains("`25:00` is not a time of day"), "{e}");
        let e = When::weekly("mon", "09:00", "17:00", "Mars/Olympus").unwrap_err().to_string();
        assert!(e.contains("`Mars/Olympus` is not a time zone"), "{e}");
        let e = When::once("2026-12-24T00:00:00Z", "2026-12-23T00:00:00Z").unwrap_err().to_string();
        assert!(e.contains("ends (2026-12-23T00:00:00Z) before it starts"), "{e}");
        let e = When::once("2026-12-24", "2026-12-25T00:00:00Z").unwrap_err().to_string();
        assert!(e.contains("`2026-12-24` is not an instant"), "{e}");
    }

    #[test]
    fn a_freeze_holds_until_it_ends_and_not_after() {
        let freeze = window("xmas", Effect::Deny, When::once("2026-12-24T00:00:00Z", "2026-12-27T00:00:00Z").unwrap());
        let ws = [freeze];
        assert_eq!(hold(&ws, &svc("api"), &no_hosts(), at("2026-12-23T23:59:59Z")), None);
        let h = hold(&ws, &svc("api"), &no_hosts(), at("2026-12-25T12:00:00Z")).unwrap();
        assert_eq!(h.until_unix_ms, Some(at("2026-12-27T00:00:00Z")));
        assert!(h.reason.contains("freeze xmas (every service)"), "{}", h.reason);
        assert!(h.reason.contains("goes on at 2026-12-27T00:00:00Z"), "{}", h.reason);
        assert_eq!(hold(&ws, &svc("api"), &no_hosts(), at("2026-12-27T00:00:00Z")), None);
    }

    #[test]
    fn a_window_applies_to_its_services_and_hosts_only() {
        let mut freeze =
            window("pay", Effect::Deny, When::once("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z").unwrap());
        freeze.services.insert(svc("payments"));
        freeze.hosts = LabelSelector([("env".to_owned(), "prod".to_owned())].into());
        let prod: Labels = [("env".to_owned(), "prod".to_owned())].into();
        let stage: Labels = [("env".to_owned(), "staging".to_owned())].into();
        let now = at("2026-06-01T00:00:00Z");
        let ws = [freeze];
        assert!(hold(&ws, &svc("payments"), &[&stage, &prod], now).is_some());
        assert!(hold(&ws, &svc("payments"), &[&stage], now).is_none());
        assert!(hold(&ws, &svc("web"), &[&prod], now).is_none());
    }

    #[test]
    fn outside_an_allow_window_a_batch_waits_for_the_next_one_in_its_zone() {
        // Weekdays 09:00-17:00 in Berlin (UTC+1 in winter).
        let allow =
            window("office", Effect::Allow, When::weekly("mon-fri", "09:00", "17:00", "Europe/Berlin").unwrap());
        let ws = [allow];
        // Friday 2026-12-04 16:30 UTC is 17:30 in Berlin: closed until Monday 08:00 UTC.
        let h = hold(&ws, &svc("api"), &no_hosts(), at("2026-12-04T16:30:00Z")).unwrap();
        assert_eq!(h.until_unix_ms, Some(at("2026-12-07T08:00:00Z")));
        assert!(h.reason.contains("outside the allowed windows (office)"), "{}", h.reason);
        // Monday 08:00 UTC is 09:00 in Berlin: open.
        assert_eq!(hold(&ws, &svc("api"), &no_hosts(), at("2026-12-07T08:00:00Z")), None);
        assert_eq!(hold(&ws, &svc("api"), &no_hosts(), at("2026-12-07T15:59:59Z")), None);
        assert!(hold(&ws, &svc("api"), &no_hosts(), at("2026-12-07T16:00:00Z")).is_some());
    }

    #[test]
    fn a_freeze_inside_an_allow_window_pushes_the_release_to_the_next_open_instant() {
        let allow = window("nights", Effect::Allow, When::weekly("daily", "22:00", "06:00", "UTC").unwrap());
        let freeze = window("audit", Effect::Deny, When::once("2026-12-01T21:00:00Z", "2026-12-02T23:00:00Z").unwrap());
        let ws = [allow, freeze];
        // At 23:00 on the 1st the night window is open but the freeze holds until the
        // 2nd 23:00, inside the next night window.
        let h = hold(&ws, &svc("api"), &no_hosts(), at("2026-12-01T23:00:00Z")).unwrap();
        assert_eq!(h.until_unix_ms, Some(at("2026-12-02T23:00:00Z")));
        // An overnight occurrence is open after midnight too.
        assert_eq!(hold(&ws[..1], &svc("api"), &no_hosts(), at("2026-12-03T05:59:00Z")), None);
        let h = hold(&ws[..1], &svc("api"), &no_hosts(), at("2026-12-03T06:00:00Z")).unwrap();
        assert_eq!(h.until_unix_ms, Some(at("2026-12-03T22:00:00Z")));
    }

    #[test]
    fn spring_forward_moves_a_start_in_the_gap_forward_by_the_gap() {
        // Europe/Berlin springs from 02:00 to 03:00 on Sunday 2026-03-29.
        let allow = window("early", Effect::Allow, When::weekly("sun", "02:30", "05:00", "Europe/Berlin").unwrap());
        let ws = [allow];
        // 02:30 does not exist that day: the window opens at 03:30 CEST = 01:30 UTC.
        let h = hold(&ws, &svc("api"), &no_hosts(), at("2026-03-29T00:00:00Z")).unwrap();
        assert_eq!(h.until_unix_ms, Some(at("2026-03-29T01:30:00Z")));
        assert!(hold(&ws, &svc("api"), &no_hosts(), at("2026-03-29T01:29:59Z")).is_some());
        assert_eq!(hold(&ws, &svc("api"), &no_hosts(), at("2026-03-29T01:30:00Z")), None);
        // It closes at 05:00 CEST = 03:00 UTC.
        assert_eq!(hold(&ws, &svc("api"), &no_hosts(), at("2026-03-29T02:59:59Z")), None);
        assert!(hold(&ws, &svc("api"), &no_hosts(), at("2026-03-29T03:00:00Z")).is_some());
        // The week before, 02:30 CET is 01:30 UTC and 05:00 CET is 04:00 UTC.
        assert_eq!(hold(&ws, &svc("api"), &no_hosts(), at("2026-03-22T03:30:00Z")), None);
    }

    #[test]
    fn fall_back_takes_the_earlier_of_a_repeated_time() {
        // America/New_York falls back from 02:00 EDT to 01:00 EST on Sunday 2026-11-01:
        // 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
        let freeze = window("night", Effect::Deny, When::weekly("sun", "01:30", "03:00", "America/New_York").unwrap());
        let ws = [freeze];
        assert_eq!(hold(&ws, &svc("api"), &no_hosts(), at("2026-11-01T05:29:59Z")), None);
        let h = hold(&ws, &svc("api"), &no_hosts(), at("2026-11-01T05:30:00Z")).unwrap();
        // It ends at 03:00 EST = 08:00 UTC: three and a half hours that night.
        assert_eq!(h.until_unix_ms, Some(at("2026-11-01T08:00:00Z")));
        // A summer Sunday: 01:30-03:00 EDT is 05:30-07:00 UTC.
        let h = hold(&ws, &svc("api"), &no_hosts(), at("2026-07-05T06:00:00Z")).unwrap();
        assert_eq!(h.until_unix_ms, Some(at("2026-07-05T07:00:00Z")));
    }

    #[test]
    fn allow_windows_that_never_open_say_so() {
        let allow = window("gone", Effect::Allow, When::once("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z").unwrap());
        let h = hold(&[allow], &svc("api"), &no_hosts(), at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(h.until_unix_ms, None);
        assert!(h.reason.contains("no window opens within a week"), "{}", h.reason);
    }

    #[test]
    fn windows_print_as_written() {
        let w = When::weekly("mon-fri", "09:00", "24:00", "Europe/Berlin").unwrap();
        assert_eq!(w.to_string(), "mon,tue,wed,thu,fri 09:00-24:00 Europe/Berlin");
        let o = When::once("2026-12-24T01:00:00+01:00", "2026-12-27T00:00:00Z").unwrap();
        assert_eq!(o.to_string(), "from 2026-12-24T00:00:00Z until 2026-12-27T00:00:00Z");
    }
}
