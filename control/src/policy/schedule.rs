//! Schedules: weekly windows in an IANA time zone, and their compilation
//! into sorted UTC intervals for the dp cores.
//!
//! A window is `DAYS HH:MM-HH:MM` in local time: `"Mon-Fri 06:00-14:00"`,
//! `"Sat,Sun 08:00-12:00"`, `"Mon-Sun 00:00-24:00"`. An end at or before
//! the start is an overnight window that closes the next day
//! (`"Sun-Thu 22:00-06:00"` opens Sunday 22:00, closes Monday 06:00).
//! Start inclusive, end exclusive. Holidays (`"2026-12-25"`) close the
//! schedule for that whole local day, cutting an overnight window at
//! midnight.
//!
//! Local times become UTC through the time-zone database bundled into the
//! binary (jiff's `tzdb-bundle-always`: no `/usr/share/zoneinfo` needed, and
//! every gate of one build agrees). A repeated local time (the hour a
//! daylight-saving change repeats) is its first occurrence. A local time
//! the change skips is, for a window's start, the same wall-clock distance
//! after the jump (RFC 5545's rule, jiff's `compatible`), and for a
//! window's end or a holiday's start, the jump itself: the first real time
//! at or after the written one, so neither keeps a window open past the
//! wall clock's reading of its end (`Sun 00:00-02:30` on the spring-forward
//! day in Berlin closes at 03:00 CEST, not at 03:30). All the time-zone work
//! happens here, on the control thread, never on a dp core.

use dataplane::policy::{ScheduleSpec, ScheduleTimes, WeeklyWindow, HORIZON_AHEAD, HORIZON_BEFORE};
use jiff::civil::{Date, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

use crate::config::nearest;

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FULL_DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// The time zone of an IANA name, from the bundled database.
///
/// # Errors
/// The name is unknown; the message suggests the nearest known name.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if let Ok(tz) = jiff::tz::db().get(name) {
        return Ok(tz);
    }
    let names: Vec<String> = jiff::tz::db().available().map(|n| n.as_str().to_string()).collect();
    let hint = names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .map(String::as_str)
        .or_else(|| nearest(name, names.iter().map(String::as_str)))
        .map_or(" (an IANA name such as \"Europe/Berlin\" or \"America/Chicago\")".to_string(), |n| {
            format!(" (did you mean {n:?}?)")
        });
    Err(format!("time zone {name:?} is not in the time-zone database{hint}"))
}

/// Parses `DAYS HH:MM-HH:MM`.
///
/// # Errors
/// What is wrong, in the operator's words.
pub fn parse_window(text: &str) -> Result<WeeklyWindow, String> {
    let mut parts = text.split_whitespace();
    let (Some(days), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("window {text:?}: expected DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 06:00-14:00\""));
    };
    let days = parse_days(days).map_err(|e| format!("window {text:?}: {e}"))?;
    let (start, end) =
        times.split_once('-').ok_or_else(|| format!("window {text:?}: times must be HH:MM-HH:MM, e.g. 06:00-14:00"))?;
    let start = parse_clock(start).map_err(|e| format!("window {text:?}: {e}"))?;
    let end = parse_clock(end).map_err(|e| format!("window {text:?}: {e}"))?;
    if start == 1440 {
        return Err(format!("window {text:?}: a window cannot start at 24:00 (use 00:00 of the next day)"));
    }
    if start == end {
        return Err(format!("window {text:?} never opens: it ends when it starts (for a whole day write 00:00-24:00)"));
    }
    let end = if end == 0 { 1440 } else { end };
    Ok(WeeklyWindow { days, start, end })
}

/// `Mon-Fri`, `Sat`, `Mon,Wed,Fri`, `Fri-Mon` (wraps), `daily`.
fn parse_days(text: &str) -> Result<u8, String> {
    if text.eq_ignore_ascii_case("daily") {
        return Ok(0x7f);
    }
    let mut mask = 0u8;
    for item in text.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day(item)?,
        }
    }
    Ok(mask)
}

fn day(text: &str) -> Result<u8, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) =
        DAYS.iter().position(|d| d.eq_ignore_ascii_case(text)).or(FULL_DAYS.iter().position(|d| *d == lower))
    {
        return Ok(i as u8);
    }
    let hint = nearest(text, DAYS.into_iter()).map_or(String::new(), |d| format!(" (did you mean {d:?}?)"));
    Err(format!("{text:?} is not a day{hint}; use Mon, Tue, Wed, Thu, Fri, Sat, Sun"))
}

/// `HH:MM` as minutes after midnight, `24:00` allowed (1440).
fn parse_clock(text: &str) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time of day (HH:MM, 00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Parses a local date `YYYY-MM-DD`.
///
/// # Errors
/// Not a date.
pub fn parse_date(text: &str) -> Result<(i16, i8, i8), String> {
    let d: Date = text.parse().map_err(|_| format!("holiday {text:?} is not a date (YYYY-MM-DD)"))?;
    if text.len() != 10 {
        return Err(format!("holiday {text:?} is not a date (YYYY-MM-DD)"));
    }
    Ok((d.year(), d.month(), d.day()))
}

/// Whether the windows cover every minute of the week and no holiday
/// closes it: such a schedule compiles to "always open" (`until` =
/// `u64::MAX`), whatever the horizon.
pub fn always_open(spec: &ScheduleSpec) -> bool {
    if !spec.holidays.is_empty() {
        return false;
    }
    const WEEK: usize = 7 * 1440;
    let mut covered = vec![false; WEEK];
    for w in &spec.windows {
        for d in 0..7usize {
            if w.days & (1 << d) == 0 {
                continue;
            }
            let start = d * 1440 + usize::from(w.start);
            let len = if w.end > w.start { w.end - w.start } else { 1440 - w.start + w.end };
            for m in start..start + usize::from(len) {
                covered[m % WEEK] = true;
            }
        }
    }
    covered.iter().all(|c| *c)
}

/// The open intervals of `spec` in `[from, to)`, sorted, merged, as Unix
/// seconds.
pub fn intervals(spec: &ScheduleSpec, tz: &TimeZone, from: u64, to: u64) -> Vec<(u64, u64)> {
    // `closing`: the time closes access (a window's end, a holiday's
    // start), so a skipped local time is the jump itself.
    let at_edge = |d: Date, minutes: u16, closing: bool| -> Option<u64> {
        let (d, minutes) = if minutes >= 1440 { (d.tomorrow().ok()?, minutes - 1440) } else { (d, minutes) };
        let dt = d.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
        let amb = tz.to_ambiguous_timestamp(dt);
        let ts = match amb.offset() {
            AmbiguousOffset::Gap { .. } if closing => {
                // Before the jump by the gap's offset; the jump follows.
                let before = amb.earlier().ok()?;
                tz.following(before).next().map(|t| t.timestamp())?
            }
            _ => amb.compatible().ok()?,
        };
        Some(u64::try_from(ts.as_second()).unwrap_or(0))
    };
    let at = |d: Date, minutes: u16| at_edge(d, minutes, false);
    let until = |d: Date, minutes: u16| at_edge(d, minutes, true);
    let local_date =
        |unix: u64| Timestamp::from_second(i64::try_from(unix).unwrap_or(i64::MAX)).map(|ts| tz.to_datetime(ts).date());
    let (Ok(first), Ok(last)) = (local_date(from), local_date(to)) else { return Vec::new() };
    let mut open = Vec::new();
    // From the day before: its overnight windows reach into the horizon.
    let mut d = first.yesterday().unwrap_or(first);
    while d <= last {
        let wd = weekday_index(d.weekday());
        for w in spec.windows.iter().filter(|w| w.days & (1 << wd) != 0) {
            let end_minutes = if w.end > w.start { w.end } else { 1440 + w.end };
            if let (Some(a), Some(b)) = (at(d, w.start), until(d, end_minutes)) {
                if a < b && b > from && a < to {
                    open.push((a, b));
                }
            }
        }
        let Ok(next) = d.tomorrow() else { break };
        d = next;
    }
    let mut closed: Vec<(u64, u64)> = spec
        .holidays
        .iter()
        .filter_map(|&(y, m, day)| {
            let h = Date::new(y, m, day).ok()?;
            Some((until(h, 0)?, at(h, 1440)?))
        })
        .collect();
    closed.sort_unstable();
    let mut out = Vec::with_capacity(open.len());
    for (a, b) in open {
        let mut cur = a;
        for &(h0, h1) in closed.iter().filter(|(h0, h1)| *h1 > a && *h0 < b) {
            if h0 > cur {
                out.push((cur, h0));
            }
            cur = cur.max(h1);
        }
        if cur < b {
            out.push((cur, b));
        }
    }
    out.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
    for (a, b) in out {
        let (a, b) = (a.max(from), b.min(to));
        if a >= b {
            continue;
        }
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

fn weekday_index(w: Weekday) -> u8 {
    w.to_monday_zero_offset() as u8
}

/// Every schedule compiled for the horizon around `now` (one day back,
/// eight ahead). A time zone that does not resolve (it was checked at load,
/// so never) compiles to "never open".
pub fn compile_times(specs: &[ScheduleSpec], now: u64) -> ScheduleTimes {
    let from = now.saturating_sub(HORIZON_BEFORE);
    let to = now.saturating_add(HORIZON_AHEAD);
    let schedules = specs
        .iter()
        .map(|s| {
            if always_open(s) {
                None
            } else {
                Some(time_zone(&s.timezone).map_or_else(|_| Vec::new(), |tz| intervals(s, &tz, from, to)))
            }
        })
        .collect();
    ScheduleTimes { from, to, schedules }
}

/// A window as written: `Mon-Fri 06:00-14:00`.
pub fn describe_window(w: &WeeklyWindow) -> String {
    let clock = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    format!("{} {}-{}", describe_days(w.days), clock(w.start), clock(w.end))
}

/// A day set as runs: `Mon-Fri`, `Sun-Thu`, `Mon,Wed,Fri`.
fn describe_days(days: u8) -> String {
    let has = |d: usize| days & (1 << (d % 7)) != 0;
    if (0..7).all(has) {
        return "Mon-Sun".into();
    }
    // Start after a day that is not in the set, so a run may wrap past
    // Sunday; list runs from Monday on, a wrapping run first.
    let Some(gap) = (0..7).find(|d| !has(*d)) else { return String::new() };
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut d = gap + 1;
    while d <= gap + 7 {
        if !has(d) {
            d += 1;
            continue;
        }
        let start = d;
        while d < gap + 6 && has(d + 1) {
            d += 1;
        }
        runs.push((start % 7, d % 7));
        d += 1;
    }
    runs.sort_by_key(|&(a, b)| if a > b { -1 } else { a as i32 });
    let runs: Vec<String> = runs
        .into_iter()
        .map(|(a, b)| if a == b { DAYS[a].to_string() } else { format!("{}-{}", DAYS[a], DAYS[b]) })
        .collect();
    runs.join(",")
}

/// Unix seconds as local time in `tz` (`2026-12-01T10:00:00+01:00`), or
/// UTC when `tz` is `None` or unknown.
pub fn format_time(unix: u64, tz: Option<&str>) -> String {
    let Ok(ts) = Timestamp::from_second(i64::try_from(unix).unwrap_or(i64::MAX)) else {
        return format!("@{unix}");
    };
    match tz.and_then(|name| time_zone(name).ok()) {
        Some(tz) => ts.to_zoned_datetime(tz).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        None => ts.to_string(),
    }
}

/// Parses a moment: RFC 3339 with an offset (`2026-12-01T10:00:00+01:00`,
/// `...Z`), a zoned time (`2026-12-01T10:00[Europe/Berlin]`), or Unix
/// seconds (`@1764579600`).
///
/// # Errors
/// None of those.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let unix = if let Some(secs) = text.strip_prefix('@') {
        secs.parse::<i64>().ok()
    } else if let Ok(ts) = text.parse::<Timestamp>() {
        Some(ts.as_second())
    } else {
        text.parse::<jiff::ZonedDateTime>().ok().map(|z| z.timestamp().as_second())
    };
    unix.and_then(|s| u64::try_from(s).ok()).ok_or_else(|| {
        format!("{text:?} is not a time: use 2026-12-01T10:00:00+01:00, 2026-12-01T09:00:00Z or 2026-12-01T10:00[Europe/Berlin]")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin_spring(window: &str) -> impl Fn(&str) -> bool {
        let spec = ScheduleSpec {
            name: "night".into(),
            timezone: "Europe/Berlin".into(),
            windows: vec![parse_window(window).unwrap()],
            holidays: vec![],
        };
        let tz = time_zone("Europe/Berlin").unwrap();
        // 2026-03-29 02:00 CET -> 03:00 CEST, at 01:00Z.
        let jump = parse_time("2026-03-29T01:00:00Z").unwrap();
        let iv = intervals(&spec, &tz, jump - 86_400, jump + 86_400);
        move |t: &str| {
            let t = parse_time(t).unwrap();
            iv.iter().any(|&(a, b)| a <= t && t < b)
        }
    }

    /// A window ending at a local time the spring-forward jump skips closes
    /// at the jump, the first real time at or after its end (found by a
    /// review: it closed the gap's length later, 03:30 CEST for 02:30).
    #[test]
    fn a_window_ending_in_a_dst_gap_closes_at_the_jump() {
        let open = berlin_spring("Sun 00:00-02:30");
        assert!(open("2026-03-28T23:00:00Z"), "00:00 CET opens");
        assert!(open("2026-03-29T00:59:59Z"), "01:59:59 CET is inside");
        assert!(!open("2026-03-29T01:00:00Z"), "03:00 CEST is past 02:30");
        assert!(!open("2026-03-29T01:15:00Z"), "03:15 CEST is past 02:30");
    }

    /// A window starting in the gap opens the same wall-clock distance
    /// after the jump (RFC 5545), never before its written start.
    #[test]
    fn a_window_starting_in_a_dst_gap_opens_after_the_jump() {
        let open = berlin_spring("Sun 02:30-05:00");
        assert!(!open("2026-03-29T00:59:59Z"), "01:59:59 CET is before 02:30");
        assert!(!open("2026-03-29T01:15:00Z"), "03:15 CEST: not yet");
        assert!(open("2026-03-29T01:30:00Z"), "03:30 CEST");
        assert!(!open("2026-03-29T03:00:00Z"), "05:00 CEST closes");
    }
}
