//! The Kazakhstan working-day calendar (five-day week), for deadlines counted in working days.
//!
//! Sources of truth, in order of application:
//! 1. weekends: every Saturday and Sunday;
//! 2. public holidays from `data/kz-holidays.toml`, embedded at build time;
//! 3. the statutory transfer (Law "On holidays" art. 5, Labour Code art. 84–85): a holiday that is
//!    not religious and falls on a Saturday or Sunday gives a day off on the next day that is
//!    neither a weekend, nor a holiday, nor a day off already given for an earlier holiday.
//!    Religious days off (Orthodox Christmas, the first day of Kurban Ait) are never transferred;
//! 4. transfers ordered by the Minister of Labour ("a Saturday becomes a working day, a Wednesday a
//!    day off"), from the embedded data and from an operator file, see
//!    [`WorkingCalendar::from_toml_file`].
//!
//! Holidays are only known for [`WorkingCalendar::covered_years`]. Outside those years the calendar
//! still skips weekends (and any ordered transfer it was given) but treats every weekday as a
//! working day, so deadlines there can come out early.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::Deserialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, Month, Weekday};
use toml::Spanned;

/// Holiday data shipped with the crate.
const EMBEDDED_HOLIDAYS: &str = include_str!("../data/kz-holidays.toml");

/// Name of the embedded data in error messages.
const EMBEDDED_ORIGIN: &str = "embedded holiday data";

/// Name of a programmatic transfer list in error messages.
const TRANSFER_LIST_ORIGIN: &str = "transfer list";

/// Largest distance between the two dates of an ordered transfer.
const MAX_TRANSFER_GAP_DAYS: i64 = 366;

/// The only date syntax accepted in data files.
const DATE_FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// The calendar built from the embedded data, parsed once.
static KAZAKHSTAN: LazyLock<WorkingCalendar> = LazyLock::new(|| {
    WorkingCalendar::from_holiday_toml(EMBEDDED_HOLIDAYS, EMBEDDED_ORIGIN)
        // The embedded data is part of the build and checked by the tests of this module.
        .unwrap_or_else(|error| panic!("{error}"))
});

/// A public holiday.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holiday {
    /// Name in Russian.
    pub name_ru: String,
    /// Name in English.
    pub name_en: String,
    /// Whether it is a religious day off, which is not transferred when it falls on a weekend.
    pub religious: bool,
}

/// A transfer ordered by the government: `work` becomes a working day and `rest` a day off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Transfer {
    /// A Saturday or Sunday that becomes a working day.
    pub work: Date,
    /// A working weekday that becomes a day off.
    pub rest: Date,
}

/// Why calendar data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// The file could not be read.
    #[error("failed to read calendar file `{}`: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not TOML of the expected shape (bad syntax, unknown key, wrong type).
    #[error("{origin}{}: {message}", line_suffix(*line))]
    Syntax {
        /// File path or description of the data.
        origin: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What the TOML parser reported.
        message: String,
    },
    /// An entry is well-formed TOML but its content is wrong.
    #[error("{origin}{}: {entry}: {problem}", line_suffix(*line))]
    InvalidEntry {
        /// File path or description of the data.
        origin: String,
        /// 1-based line of the entry or field, when known.
        line: Option<usize>,
        /// Which entry, e.g. `transfer #2`.
        entry: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// `", line N"` or nothing.
fn line_suffix(line: Option<usize>) -> String {
    line.map(|number| format!(", line {number}"))
        .unwrap_or_default()
}

/// Why a weekday is not a working day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DayOffReason {
    /// A public holiday on a weekday.
    Holiday,
    /// The day off given for the holiday on this weekend date.
    MovedHoliday(Date),
    /// The day off ordered in exchange for working on this weekend date.
    OrderedTransfer(Date),
}

/// Working days of a five-day week in Kazakhstan.
#[derive(Clone, Debug)]
pub struct WorkingCalendar {
    /// Years whose holidays are known.
    covered_years: RangeInclusive<i32>,
    /// Every holiday, whatever the weekday.
    holidays: BTreeMap<Date, Holiday>,
    /// Monday–Friday dates that are not working days.
    weekday_days_off: BTreeMap<Date, DayOffReason>,
    /// Saturdays and Sundays that are working days.
    weekend_working_days: BTreeSet<Date>,
    /// Ordered transfers applied so far, to accept a repeated entry.
    transfers: BTreeSet<Transfer>,
}

impl WorkingCalendar {
    /// The calendar of the embedded data: holidays of [`Self::covered_years`] and the transfers
    /// ordered so far that are listed there.
    pub fn kazakhstan() -> WorkingCalendar {
        KAZAKHSTAN.clone()
    }

    /// The embedded calendar plus the ordered transfers in the TOML file at `path`.
    ///
    /// The file holds only `[[transfer]]` entries whose `work` and `rest` dates are `"YYYY-MM-DD"`
    /// strings or bare TOML dates. Repeating a transfer that is already applied is accepted.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<WorkingCalendar, CalendarError> {
        let file_path = path.as_ref();
        let text =
            std::fs::read_to_string(file_path).map_err(|source| CalendarError::ReadFile {
                path: file_path.to_path_buf(),
                source,
            })?;
        let origin = format!("calendar file `{}`", file_path.display());
        WorkingCalendar::kazakhstan().with_transfer_toml_from(&text, &origin)
    }

    /// This calendar plus the ordered transfers in `toml_text`, in the format of
    /// [`Self::from_toml_file`].
    pub fn with_transfers_toml(self, toml_text: &str) -> Result<WorkingCalendar, CalendarError> {
        self.with_transfer_toml_from(toml_text, "transfer data")
    }

    /// This calendar plus `transfers`, applied in order.
    ///
    /// Each `work` date must be a Saturday or Sunday that is not a holiday and not already a
    /// working day; each `rest` date must be a weekday that is still a working day. Repeating a
    /// transfer that is already applied is accepted.
    pub fn with_transfers(
        mut self,
        transfers: impl IntoIterator<Item = Transfer>,
    ) -> Result<WorkingCalendar, CalendarError> {
        for (index, transfer) in transfers.into_iter().enumerate() {
            if let Err(problem) = self.apply_transfer(transfer) {
                return Err(CalendarError::InvalidEntry {
                    origin: TRANSFER_LIST_ORIGIN.to_string(),
                    line: None,
                    entry: format!("transfer #{}", index + 1),
                    problem,
                });
            }
        }
        Ok(self)
    }

    /// Years whose holidays are known; other years only have weekends.
    pub fn covered_years(&self) -> RangeInclusive<i32> {
        self.covered_years.clone()
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: Date) -> bool {
        if is_weekend(date) {
            return self.weekend_working_days.contains(&date);
        }
        !self.weekday_days_off.contains_key(&date)
    }

    /// The Russian name of the holiday on `date`, if any; days off given in exchange for a holiday
    /// are not holidays themselves.
    pub fn holiday_name(&self, date: Date) -> Option<&str> {
        self.holiday(date).map(|holiday| holiday.name_ru.as_str())
    }

    /// The holiday on `date`, if any.
    pub fn holiday(&self, date: Date) -> Option<&Holiday> {
        self.holidays.get(&date)
    }

    /// The deadline `working_days` working days after `date`.
    ///
    /// `date` itself is not counted: with a request filed on Friday, 1 working day is the next
    /// Monday (if that is a working day). With `working_days == 0` the result is `date` when it is
    /// a working day, else the next working day. Past year 9999 the result saturates at
    /// [`Date::MAX`]; see [`Self::checked_add_working_days`].
    pub fn add_working_days(&self, date: Date, working_days: u32) -> Date {
        self.checked_add_working_days(date, working_days)
            .unwrap_or(Date::MAX)
    }

    /// Like [`Self::add_working_days`], but `None` when the deadline is past year 9999.
    pub fn checked_add_working_days(&self, date: Date, working_days: u32) -> Option<Date> {
        if working_days == 0 && self.is_working_day(date) {
            return Some(date);
        }
        let target = i64::from(working_days.max(1));
        let start_day = date.to_julian_day();
        let last_day = Date::MAX.to_julian_day();
        if self.count_working_days(start_day, last_day) < target {
            return None;
        }
        // Smallest day whose running count reaches the target; counts only grow with the end day.
        let mut low = start_day + 1;
        let mut high = last_day;
        while low < high {
            let middle = low + (high - low) / 2;
            if self.count_working_days(start_day, middle) >= target {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Date::from_julian_day(low).ok()
    }

    /// Working days in `(start, end]`: `end` counts, `start` does not.
    ///
    /// When `end` is before `start` the result is the negated count over `(end, start]`, so
    /// `working_days_between(a, b) == -working_days_between(b, a)` and a result of 0 means no
    /// working day passed. For a deadline `d = add_working_days(start, n)` with `n > 0`,
    /// `working_days_between(start, d) == n`.
    pub fn working_days_between(&self, start: Date, end: Date) -> i64 {
        if end < start {
            return -self.count_working_days(end.to_julian_day(), start.to_julian_day());
        }
        self.count_working_days(start.to_julian_day(), end.to_julian_day())
    }

    /// Working days among Julian days in `(start_day, end_day]`, for `start_day <= end_day`.
    fn count_working_days(&self, start_day: i32, end_day: i32) -> i64 {
        let (Ok(first), Ok(last)) = (
            Date::from_julian_day(start_day),
            Date::from_julian_day(end_day),
        ) else {
            return 0;
        };
        let weekdays =
            weekdays_before(i64::from(end_day) + 1) - weekdays_before(i64::from(start_day) + 1);
        let weekday_days_off = self
            .weekday_days_off
            .range((Bound::Excluded(first), Bound::Included(last)))
            .count();
        let weekend_working_days = self
            .weekend_working_days
            .range((Bound::Excluded(first), Bound::Included(last)))
            .count();
        weekdays - count_as_i64(weekday_days_off) + count_as_i64(weekend_working_days)
    }

    /// Parses holiday data (see `data/kz-holidays.toml`) into a calendar.
    fn from_holiday_toml(text: &str, origin: &str) -> Result<WorkingCalendar, CalendarError> {
        let data: HolidayFile =
            toml::from_str(text).map_err(|error| syntax_error(text, origin, &error))?;
        let entry_error =
            |span: Range<usize>, entry: String, problem: String| CalendarError::InvalidEntry {
                origin: origin.to_string(),
                line: line_of(text, span.start),
                entry,
                problem,
            };
        if data.last_year.get_ref() < data.first_year.get_ref() {
            return Err(entry_error(
                data.last_year.span(),
                "last_year".to_string(),
                format!(
                    "{} is before first_year {}",
                    data.last_year.get_ref(),
                    data.first_year.get_ref()
                ),
            ));
        }
        let covered_years = *data.first_year.get_ref()..=*data.last_year.get_ref();
        let mut holidays: BTreeMap<Date, Holiday> = BTreeMap::new();
        for (index, spanned_entry) in data.holiday.iter().enumerate() {
            let span = spanned_entry.span();
            let entry = spanned_entry.get_ref();
            let entry_name = format!("holiday #{} ({})", index + 1, entry.name_en);
            let dates = entry
                .dates(&covered_years)
                .map_err(|problem| entry_error(span.clone(), entry_name.clone(), problem))?;
            for date in dates {
                let holiday = Holiday {
                    name_ru: entry.name_ru.clone(),
                    name_en: entry.name_en.clone(),
                    religious: entry.religious,
                };
                // Two holidays on one date need a legal decision (is a day off owed for the
                // second one?), which the maintainer of the data must take, not this code.
                if let Some(existing) = holidays.insert(date, holiday) {
                    return Err(entry_error(
                        span,
                        entry_name,
                        format!("{date} is already the holiday {}", existing.name_en),
                    ));
                }
            }
        }
        let mut calendar = WorkingCalendar {
            covered_years,
            holidays,
            weekday_days_off: BTreeMap::new(),
            weekend_working_days: BTreeSet::new(),
            transfers: BTreeSet::new(),
        };
        calendar.give_days_off_for_holidays();
        calendar.apply_transfer_entries(&data.transfer, text, origin)?;
        Ok(calendar)
    }

    /// Marks weekday holidays as days off and gives a day off for each non-religious holiday on a
    /// weekend, in date order so that earlier holidays take the earlier free days.
    fn give_days_off_for_holidays(&mut self) {
        for date in self.holidays.keys() {
            if !is_weekend(*date) {
                self.weekday_days_off.insert(*date, DayOffReason::Holiday);
            }
        }
        let weekend_holidays: Vec<Date> = self
            .holidays
            .iter()
            .filter(|(date, holiday)| is_weekend(**date) && !holiday.religious)
            .map(|(date, _)| *date)
            .collect();
        for holiday_date in weekend_holidays {
            let mut candidate = holiday_date;
            while let Some(next_day) = candidate.next_day() {
                candidate = next_day;
                if is_weekend(candidate) || self.weekday_days_off.contains_key(&candidate) {
                    continue;
                }
                self.weekday_days_off
                    .insert(candidate, DayOffReason::MovedHoliday(holiday_date));
                break;
            }
        }
    }

    /// Parses `[[transfer]]` TOML and applies it to this calendar.
    fn with_transfer_toml_from(
        mut self,
        text: &str,
        origin: &str,
    ) -> Result<WorkingCalendar, CalendarError> {
        let data: TransferFile =
            toml::from_str(text).map_err(|error| syntax_error(text, origin, &error))?;
        self.apply_transfer_entries(&data.transfer, text, origin)?;
        Ok(self)
    }

    /// Applies parsed `[[transfer]]` entries, reporting problems with the line of the entry.
    fn apply_transfer_entries(
        &mut self,
        entries: &[Spanned<TransferEntry>],
        text: &str,
        origin: &str,
    ) -> Result<(), CalendarError> {
        for (index, spanned_entry) in entries.iter().enumerate() {
            let entry = spanned_entry.get_ref();
            let entry_error = |span: Range<usize>, problem: String| CalendarError::InvalidEntry {
                origin: origin.to_string(),
                line: line_of(text, span.start),
                entry: format!("transfer #{}", index + 1),
                problem,
            };
            let work = parse_date_value("work", entry.work.get_ref())
                .map_err(|problem| entry_error(entry.work.span(), problem))?;
            let rest = parse_date_value("rest", entry.rest.get_ref())
                .map_err(|problem| entry_error(entry.rest.span(), problem))?;
            self.apply_transfer(Transfer { work, rest })
                .map_err(|problem| entry_error(spanned_entry.span(), problem))?;
        }
        Ok(())
    }

    /// Applies one ordered transfer, or says why it contradicts the calendar.
    fn apply_transfer(&mut self, transfer: Transfer) -> Result<(), String> {
        let Transfer { work, rest } = transfer;
        if self.transfers.contains(&transfer) {
            return Ok(());
        }
        if work == rest {
            return Err(format!("`work` and `rest` are the same date {work}"));
        }
        // Orders move a day by days or weeks; a gap over a year is most likely a mistyped year.
        let gap_days = (rest - work).whole_days().abs();
        if gap_days > MAX_TRANSFER_GAP_DAYS {
            return Err(format!(
                "`work` date {work} and `rest` date {rest} are {gap_days} days apart, more than \
                 {MAX_TRANSFER_GAP_DAYS}"
            ));
        }
        if !is_weekend(work) {
            return Err(format!(
                "`work` date {work} is a {}, only a Saturday or Sunday can become a working day",
                work.weekday()
            ));
        }
        if let Some(holiday) = self.holidays.get(&work) {
            return Err(format!(
                "`work` date {work} is the holiday {} and cannot become a working day",
                holiday.name_en
            ));
        }
        if self.weekend_working_days.contains(&work) {
            return Err(format!(
                "`work` date {work} is already a working day by an earlier transfer"
            ));
        }
        if is_weekend(rest) {
            return Err(format!(
                "`rest` date {rest} is a {}, only a Monday to Friday can become a day off",
                rest.weekday()
            ));
        }
        if let Some(reason) = self.weekday_days_off.get(&rest) {
            let explanation = match reason {
                DayOffReason::Holiday => {
                    let name = self
                        .holidays
                        .get(&rest)
                        .map(|holiday| holiday.name_en.as_str())
                        .unwrap_or("a holiday");
                    format!("it is the holiday {name}")
                }
                DayOffReason::MovedHoliday(holiday_date) => {
                    format!("it replaces the holiday on {holiday_date}")
                }
                DayOffReason::OrderedTransfer(work_date) => {
                    format!("it was already exchanged for working on {work_date}")
                }
            };
            return Err(format!(
                "`rest` date {rest} is already a day off: {explanation}"
            ));
        }
        self.weekend_working_days.insert(work);
        self.weekday_days_off
            .insert(rest, DayOffReason::OrderedTransfer(work));
        self.transfers.insert(transfer);
        Ok(())
    }
}

/// Top level of the embedded holiday data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayFile {
    /// First year whose holidays are listed.
    first_year: Spanned<i32>,
    /// Last year whose holidays are listed.
    last_year: Spanned<i32>,
    /// Holidays, annual or one-off.
    #[serde(default)]
    holiday: Vec<Spanned<HolidayEntry>>,
    /// Ordered transfers.
    #[serde(default)]
    transfer: Vec<Spanned<TransferEntry>>,
}

/// A `[[holiday]]` entry: either `month` and `day` every year, or a single `date`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayEntry {
    /// Month of an annual holiday.
    month: Option<u8>,
    /// Day of month of an annual holiday.
    day: Option<u8>,
    /// First year of an annual holiday, if it started within the covered years.
    from_year: Option<i32>,
    /// Last year of an annual holiday, if it ended within the covered years.
    until_year: Option<i32>,
    /// Date of a one-off holiday, `YYYY-MM-DD`.
    date: Option<String>,
    /// Name in Russian.
    name_ru: String,
    /// Name in English.
    name_en: String,
    /// Not transferred when on a weekend.
    #[serde(default)]
    religious: bool,
}

impl HolidayEntry {
    /// The dates of this holiday within `covered_years`.
    fn dates(&self, covered_years: &RangeInclusive<i32>) -> Result<Vec<Date>, String> {
        match (&self.date, self.month, self.day) {
            (Some(date_text), None, None) => {
                if self.from_year.is_some() || self.until_year.is_some() {
                    return Err(
                        "`from_year` and `until_year` only apply to `month` and `day`".to_string(),
                    );
                }
                let date = parse_date("date", date_text)?;
                if !covered_years.contains(&date.year()) {
                    return Err(format!(
                        "{date} is outside the covered years {}-{}",
                        covered_years.start(),
                        covered_years.end()
                    ));
                }
                Ok(vec![date])
            }
            (None, Some(month_number), Some(day)) => {
                let month = Month::try_from(month_number)
                    .map_err(|_| format!("month {month_number} is not 1 to 12"))?;
                let first_year = self
                    .from_year
                    .unwrap_or(*covered_years.start())
                    .max(*covered_years.start());
                let last_year = self
                    .until_year
                    .unwrap_or(*covered_years.end())
                    .min(*covered_years.end());
                let mut dates = Vec::new();
                for year in first_year..=last_year {
                    let date = Date::from_calendar_date(year, month, day)
                        .map_err(|_| format!("{month} {day} does not exist in {year}"))?;
                    dates.push(date);
                }
                Ok(dates)
            }
            _ => Err("give either `date`, or both `month` and `day`".to_string()),
        }
    }
}

/// Top level of an operator's transfer file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferFile {
    /// Ordered transfers.
    #[serde(default)]
    transfer: Vec<Spanned<TransferEntry>>,
}

/// A `[[transfer]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferEntry {
    /// Weekend date that becomes a working day, `"YYYY-MM-DD"` or a bare TOML date.
    work: Spanned<toml::Value>,
    /// Weekday that becomes a day off, `"YYYY-MM-DD"` or a bare TOML date.
    rest: Spanned<toml::Value>,
}

/// Parses a date given as a `"YYYY-MM-DD"` string or as a bare TOML date, naming `field` in the
/// error.
fn parse_date_value(field: &str, value: &toml::Value) -> Result<Date, String> {
    match value {
        toml::Value::String(text) => parse_date(field, text),
        // A bare TOML date prints as `YYYY-MM-DD`; one with a time of day does not parse.
        toml::Value::Datetime(datetime) => parse_date(field, &datetime.to_string()),
        other => Err(format!(
            "`{field}` is the {} `{other}`, expected a YYYY-MM-DD date",
            other.type_str()
        )),
    }
}

/// Parses `YYYY-MM-DD`, naming `field` in the error.
fn parse_date(field: &str, text: &str) -> Result<Date, String> {
    Date::parse(text, DATE_FORMAT)
        .map_err(|error| format!("`{field}` is `{text}`, expected a YYYY-MM-DD date: {error}"))
}

/// Saturday or Sunday.
fn is_weekend(date: Date) -> bool {
    matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// Number of Monday–Friday days among Julian days `[0, day)`, extended to negative days so that
/// differences count any range. Julian day 0 is a Monday.
fn weekdays_before(day: i64) -> i64 {
    day.div_euclid(7) * 5 + day.rem_euclid(7).min(5)
}

/// A count of collection items as `i64`; collections here are far below `i64::MAX`.
fn count_as_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> Option<usize> {
    let before = text.get(..offset)?;
    Some(before.matches('\n').count() + 1)
}

/// Turns a TOML error into [`CalendarError::Syntax`] with a line number.
fn syntax_error(text: &str, origin: &str, error: &toml::de::Error) -> CalendarError {
    CalendarError::Syntax {
        origin: origin.to_string(),
        line: error.span().and_then(|span| line_of(text, span.start)),
        message: error.message().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    /// Working-day count by walking day by day, to check the arithmetic one.
    fn naive_working_days_between(calendar: &WorkingCalendar, start: Date, end: Date) -> i64 {
        let (first, last, sign) = if end < start {
            (end, start, -1)
        } else {
            (start, end, 1)
        };
        let mut count = 0;
        let mut day = first;
        while day < last {
            day = day.next_day().unwrap();
            if calendar.is_working_day(day) {
                count += 1;
            }
        }
        sign * count
    }

    fn days_off_between(calendar: &WorkingCalendar, first: Date, last: Date) -> Vec<Date> {
        let mut days_off = Vec::new();
        let mut day = first;
        while day <= last {
            if !calendar.is_working_day(day) {
                days_off.push(day);
            }
            day = day.next_day().unwrap();
        }
        days_off
    }

    #[test]
    fn embedded_data_loads_and_covers_2024_to_2027() {
        let calendar = WorkingCalendar::kazakhstan();
        assert_eq!(calendar.covered_years(), 2024..=2027);
        for year in calendar.covered_years() {
            let kurban_ait_days = calendar
                .holidays
                .iter()
                .filter(|(date, holiday)| date.year() == year && holiday.name_en == "Kurban Ait")
                .count();
            assert_eq!(kurban_ait_days, 1, "Kurban Ait in {year}");
            let new_year = calendar.holiday(Date::from_ordinal_date(year, 1).unwrap());
            assert_eq!(
                new_year.map(|holiday| holiday.name_en.as_str()),
                Some("New Year")
            );
        }
        // Each year: 13 common fixed-date days, Constitution Day (none in 2026) and Kurban Ait.
        assert_eq!(calendar.holidays.len(), 15 + 15 + 14 + 15);
    }

    #[test]
    fn nauryz_2024_saturday_moves_to_monday() {
        let calendar = WorkingCalendar::kazakhstan();
        assert_eq!(date!(2024 - 03 - 23).weekday(), Weekday::Saturday);
        assert_eq!(
            days_off_between(&calendar, date!(2024 - 03 - 20), date!(2024 - 03 - 27)),
            [
                date!(2024 - 03 - 21),
                date!(2024 - 03 - 22),
                date!(2024 - 03 - 23),
                date!(2024 - 03 - 24),
                date!(2024 - 03 - 25),
            ]
        );
        assert_eq!(
            calendar.holiday_name(date!(2024 - 03 - 23)),
            Some("Наурыз мейрамы")
        );
        // The moved day off is not itself a holiday.
        assert_eq!(calendar.holiday_name(date!(2024 - 03 - 25)), None);
        assert!(calendar.is_working_day(date!(2024 - 03 - 26)));
    }

    #[test]
    fn nauryz_2026_weekend_days_move_past_the_monday_holiday() {
        let calendar = WorkingCalendar::kazakhstan();
        assert_eq!(date!(2026 - 03 - 21).weekday(), Weekday::Saturday);
        assert_eq!(date!(2026 - 03 - 23).weekday(), Weekday::Monday);
        assert_eq!(
            days_off_between(&calendar, date!(2026 - 03 - 20), date!(2026 - 03 - 27)),
            [
                date!(2026 - 03 - 21),
                date!(2026 - 03 - 22),
                date!(2026 - 03 - 23),
                date!(2026 - 03 - 24),
                date!(2026 - 03 - 25),
            ]
        );
        assert!(calendar.is_working_day(date!(2026 - 03 - 20)));
        assert!(calendar.is_working_day(date!(2026 - 03 - 26)));
    }

    #[test]
    fn weekend_holidays_of_may_2027_move_to_mondays() {
        let calendar = WorkingCalendar::kazakhstan();
        assert_eq!(date!(2027 - 05 - 09).weekday(), Weekday::Sunday);
        assert!(!calendar.is_working_day(date!(2027 - 05 - 10)));
        assert!(calendar.is_working_day(date!(2027 - 05 - 11)));
        // Unity Day on Saturday 1 May 2027 gives Monday 3 May.
        assert!(!calendar.is_working_day(date!(2027 - 05 - 03)));
        assert!(calendar.is_working_day(date!(2027 - 05 - 04)));
        // Defender of the Fatherland Day is on a Friday: no transfer.
        assert!(!calendar.is_working_day(date!(2027 - 05 - 07)));
        assert_eq!(
            days_off_between(&calendar, date!(2027 - 05 - 01), date!(2027 - 05 - 14)).len(),
            2 + 1 + 1 + 2 + 1
        );
    }

    #[test]
    fn religious_days_off_on_a_weekend_are_not_moved() {
        let calendar = WorkingCalendar::kazakhstan();
        assert_eq!(date!(2024 - 01 - 07).weekday(), Weekday::Sunday);
        assert!(calendar.holiday(date!(2024 - 01 - 07)).unwrap().religious);
        assert!(calendar.is_working_day(date!(2024 - 01 - 08)));

        // Kurban Ait 2024 was announced for Sunday 16 June, and 17 June stayed a working day.
        assert_eq!(date!(2024 - 06 - 16).weekday(), Weekday::Sunday);
        assert_eq!(
            calendar.holiday_name(date!(2024 - 06 - 16)),
            Some("Курбан айт")
        );
        assert!(calendar.is_working_day(date!(2024 - 06 - 17)));

        assert_eq!(date!(2027 - 05 - 16).weekday(), Weekday::Sunday);
        assert!(calendar.is_working_day(date!(2027 - 05 - 17)));
    }

    #[test]
    fn kurban_ait_on_a_weekday_is_a_day_off() {
        let calendar = WorkingCalendar::kazakhstan();
        assert!(!calendar.is_working_day(date!(2025 - 06 - 06)));
        assert!(!calendar.is_working_day(date!(2026 - 05 - 27)));
        assert!(calendar.is_working_day(date!(2026 - 05 - 28)));
    }

    #[test]
    fn constitution_day_moves_to_15_march_after_2025() {
        let calendar = WorkingCalendar::kazakhstan();
        assert!(calendar.holiday(date!(2025 - 08 - 30)).is_some());
        // Saturday 30 August 2025 gave Monday 1 September.
        assert!(!calendar.is_working_day(date!(2025 - 09 - 01)));
        assert_eq!(calendar.holiday(date!(2026 - 08 - 30)), None);
        assert!(calendar.is_working_day(date!(2026 - 08 - 31)));
        assert_eq!(calendar.holiday(date!(2026 - 03 - 15)), None);
        assert_eq!(
            calendar
                .holiday(date!(2027 - 03 - 15))
                .map(|holiday| holiday.name_en.as_str()),
            Some("Constitution Day")
        );
    }

    #[test]
    fn embedded_ordered_transfers_apply() {
        let calendar = WorkingCalendar::kazakhstan();
        assert!(calendar.is_working_day(date!(2024 - 05 - 04)));
        assert!(!calendar.is_working_day(date!(2024 - 05 - 08)));
        assert!(calendar.is_working_day(date!(2025 - 01 - 05)));
        assert!(!calendar.is_working_day(date!(2025 - 01 - 03)));
    }

    #[test]
    fn deadline_across_new_year_2026() {
        let calendar = WorkingCalendar::kazakhstan();
        let filed = date!(2025 - 12 - 30);
        // 31 Dec is day 1; 1-2 Jan holidays, 3-4 Jan weekend; 5 Jan day 2, 6 Jan day 3;
        // 7 Jan Orthodox Christmas; 8 Jan day 4.
        assert_eq!(calendar.add_working_days(filed, 1), date!(2025 - 12 - 31));
        assert_eq!(calendar.add_working_days(filed, 2), date!(2026 - 01 - 05));
        assert_eq!(calendar.add_working_days(filed, 3), date!(2026 - 01 - 06));
        assert_eq!(calendar.add_working_days(filed, 4), date!(2026 - 01 - 08));
    }

    #[test]
    fn deadline_across_new_year_2027_skips_the_moved_day_off() {
        let calendar = WorkingCalendar::kazakhstan();
        let filed = date!(2026 - 12 - 30);
        // 31 Dec day 1; 1 Jan (Fri) and 2 Jan (Sat) holidays, 3 Jan Sunday, 4 Jan the day off for
        // 2 Jan; 5 Jan day 2, 6 Jan day 3; 7 Jan Orthodox Christmas; 8 Jan day 4.
        assert_eq!(calendar.add_working_days(filed, 2), date!(2027 - 01 - 05));
        assert_eq!(calendar.add_working_days(filed, 3), date!(2027 - 01 - 06));
        assert_eq!(calendar.add_working_days(filed, 4), date!(2027 - 01 - 08));
    }

    #[test]
    fn zero_working_days_is_the_same_or_next_working_day() {
        let calendar = WorkingCalendar::kazakhstan();
        assert_eq!(
            calendar.add_working_days(date!(2026 - 01 - 06), 0),
            date!(2026 - 01 - 06)
        );
        assert_eq!(
            calendar.add_working_days(date!(2026 - 01 - 01), 0),
            date!(2026 - 01 - 05)
        );
        assert_eq!(
            calendar.add_working_days(date!(2026 - 03 - 21), 0),
            date!(2026 - 03 - 26)
        );
    }

    #[test]
    fn deadline_filed_on_a_day_off_counts_from_the_next_working_day() {
        let calendar = WorkingCalendar::kazakhstan();
        // Filed on Saturday 21 March 2026: 26 March is day 1, 27 March day 2.
        assert_eq!(
            calendar.add_working_days(date!(2026 - 03 - 21), 1),
            date!(2026 - 03 - 26)
        );
        assert_eq!(
            calendar.add_working_days(date!(2026 - 03 - 21), 2),
            date!(2026 - 03 - 27)
        );
    }

    #[test]
    fn working_days_between_is_antisymmetric() {
        let calendar = WorkingCalendar::kazakhstan();
        let start = date!(2025 - 12 - 30);
        let end = date!(2026 - 01 - 08);
        assert_eq!(calendar.working_days_between(start, end), 4);
        assert_eq!(calendar.working_days_between(end, start), -4);
        assert_eq!(calendar.working_days_between(start, start), 0);
        // Only days off in between: nothing passed.
        assert_eq!(
            calendar.working_days_between(date!(2026 - 01 - 01), date!(2026 - 01 - 04)),
            0
        );
        assert_eq!(
            calendar.working_days_between(date!(2026 - 01 - 04), date!(2026 - 01 - 01)),
            0
        );
    }

    #[test]
    fn counting_matches_day_by_day_walk() {
        let calendar = WorkingCalendar::kazakhstan();
        let mut start = date!(2023 - 12 - 20);
        while start < date!(2028 - 01 - 15) {
            for length in [0, 1, 2, 3, 6, 7, 8, 13, 31, 45] {
                let end = start + time::Duration::days(length);
                assert_eq!(
                    calendar.working_days_between(start, end),
                    naive_working_days_between(&calendar, start, end),
                    "{start}..{end}"
                );
                assert_eq!(
                    calendar.working_days_between(end, start),
                    naive_working_days_between(&calendar, end, start),
                    "{end}..{start}"
                );
            }
            start = start.next_day().unwrap();
        }
    }

    #[test]
    fn deadlines_agree_with_counting() {
        let calendar = WorkingCalendar::kazakhstan();
        let mut filed = date!(2024 - 01 - 01);
        while filed < date!(2028 - 01 - 01) {
            for working_days in [1u32, 2, 3, 5, 10, 30] {
                let deadline = calendar.add_working_days(filed, working_days);
                assert!(
                    calendar.is_working_day(deadline),
                    "{filed} + {working_days}"
                );
                assert_eq!(
                    calendar.working_days_between(filed, deadline),
                    i64::from(working_days),
                    "{filed} + {working_days}"
                );
            }
            filed = filed.next_day().unwrap();
        }
    }

    #[test]
    fn outside_covered_years_only_weekends_are_off() {
        let calendar = WorkingCalendar::kazakhstan();
        // 1 January 2030 is a Tuesday: a holiday in reality, unknown here.
        assert!(calendar.is_working_day(date!(2030 - 01 - 01)));
        assert_eq!(calendar.holiday_name(date!(2030 - 01 - 01)), None);
        assert!(!calendar.is_working_day(date!(2030 - 01 - 05)));
        assert_eq!(
            calendar.add_working_days(date!(2030 - 01 - 04), 1),
            date!(2030 - 01 - 07)
        );
        assert_eq!(
            calendar.working_days_between(date!(2029 - 12 - 31), date!(2030 - 01 - 31)),
            23
        );
    }

    #[test]
    fn deadline_past_year_9999_saturates() {
        let calendar = WorkingCalendar::kazakhstan();
        assert_eq!(
            calendar.checked_add_working_days(date!(2026 - 01 - 05), u32::MAX),
            None
        );
        assert_eq!(
            calendar.add_working_days(date!(2026 - 01 - 05), u32::MAX),
            Date::MAX
        );
        assert_eq!(
            calendar.checked_add_working_days(date!(9999 - 12 - 30), 1),
            Some(date!(9999 - 12 - 31))
        );
        assert_eq!(calendar.checked_add_working_days(Date::MAX, 1), None);
    }

    #[test]
    fn transfer_file_makes_a_saturday_a_working_day() {
        // A hypothetical order: work Saturday 3 January 2026, rest Monday 5 January 2026.
        let transfer_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            transfer_file.path(),
            "# order of the Minister of Labour\n\
             [[transfer]]\n\
             work = \"2026-01-03\"\n\
             rest = \"2026-01-05\"\n",
        )
        .unwrap();
        let calendar = WorkingCalendar::from_toml_file(transfer_file.path()).unwrap();
        assert_eq!(date!(2026 - 01 - 03).weekday(), Weekday::Saturday);
        assert!(calendar.is_working_day(date!(2026 - 01 - 03)));
        assert!(!calendar.is_working_day(date!(2026 - 01 - 05)));
        assert_eq!(
            calendar.add_working_days(date!(2025 - 12 - 30), 2),
            date!(2026 - 01 - 03)
        );
        assert_eq!(
            calendar.add_working_days(date!(2025 - 12 - 30), 3),
            date!(2026 - 01 - 06)
        );
        // The embedded defaults are still there.
        assert!(!calendar.is_working_day(date!(2026 - 01 - 07)));
        assert!(calendar.is_working_day(date!(2024 - 05 - 04)));
    }

    #[test]
    fn transfer_dates_can_be_bare_toml_dates() {
        let calendar = WorkingCalendar::kazakhstan()
            .with_transfers_toml("[[transfer]]\nwork = 2026-01-03\nrest = 2026-01-05\n")
            .unwrap();
        assert!(calendar.is_working_day(date!(2026 - 01 - 03)));
        assert!(!calendar.is_working_day(date!(2026 - 01 - 05)));
    }

    #[test]
    fn transfers_can_be_given_as_values() {
        let calendar = WorkingCalendar::kazakhstan()
            .with_transfers([Transfer {
                work: date!(2026 - 05 - 30),
                rest: date!(2026 - 05 - 28),
            }])
            .unwrap();
        assert!(calendar.is_working_day(date!(2026 - 05 - 30)));
        assert!(!calendar.is_working_day(date!(2026 - 05 - 28)));
    }

    #[test]
    fn repeating_an_applied_transfer_is_accepted() {
        let calendar = WorkingCalendar::kazakhstan()
            .with_transfers_toml("[[transfer]]\nwork = \"2024-05-04\"\nrest = \"2024-05-08\"\n")
            .unwrap();
        assert!(calendar.is_working_day(date!(2024 - 05 - 04)));
        assert!(!calendar.is_working_day(date!(2024 - 05 - 08)));
    }

    #[test]
    fn empty_transfer_file_changes_nothing() {
        let calendar = WorkingCalendar::kazakhstan()
            .with_transfers_toml("# no orders yet\n")
            .unwrap();
        assert!(calendar.is_working_day(date!(2026 - 01 - 05)));
    }

    fn transfer_error(text: &str) -> String {
        WorkingCalendar::kazakhstan()
            .with_transfers_toml(text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_date_names_line_entry_and_field() {
        let text = "[[transfer]]\nwork = \"2026-01-03\"\nrest = \"2026-01-05\"\n\n\
                    [[transfer]]\nwork = \"2026-13-07\"\nrest = \"2026-12-14\"\n";
        let error = WorkingCalendar::kazakhstan()
            .with_transfers_toml(text)
            .unwrap_err();
        assert!(
            matches!(
                &error,
                CalendarError::InvalidEntry { line: Some(6), entry, .. } if entry == "transfer #2"
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with(
                "transfer data, line 6: transfer #2: `work` is `2026-13-07`, expected a YYYY-MM-DD date"
            ),
            "{error}"
        );
    }

    #[test]
    fn contradicting_transfers_are_rejected_with_reason() {
        assert_eq!(
            transfer_error("[[transfer]]\nwork = \"2026-01-06\"\nrest = \"2026-01-05\"\n"),
            "transfer data, line 1: transfer #1: `work` date 2026-01-06 is a Tuesday, only a \
             Saturday or Sunday can become a working day"
        );
        assert_eq!(
            transfer_error("[[transfer]]\nwork = \"2026-01-03\"\nrest = \"2026-01-07\"\n"),
            "transfer data, line 1: transfer #1: `rest` date 2026-01-07 is already a day off: it \
             is the holiday Orthodox Christmas"
        );
        assert_eq!(
            transfer_error("[[transfer]]\nwork = \"2026-03-28\"\nrest = \"2026-03-24\"\n"),
            "transfer data, line 1: transfer #1: `rest` date 2026-03-24 is already a day off: it \
             replaces the holiday on 2026-03-21"
        );
        assert_eq!(
            transfer_error("[[transfer]]\nwork = \"2026-03-21\"\nrest = \"2026-03-27\"\n"),
            "transfer data, line 1: transfer #1: `work` date 2026-03-21 is the holiday Nauryz and \
             cannot become a working day"
        );
        assert_eq!(
            transfer_error("[[transfer]]\nwork = \"2026-01-03\"\nrest = \"2026-01-04\"\n"),
            "transfer data, line 1: transfer #1: `rest` date 2026-01-04 is a Sunday, only a \
             Monday to Friday can become a day off"
        );
        assert!(
            transfer_error(
                "[[transfer]]\nwork = \"2026-01-03\"\nrest = \"2026-01-05\"\n\
                 [[transfer]]\nwork = \"2026-01-10\"\nrest = \"2026-01-05\"\n"
            )
            .contains(
                "transfer #2: `rest` date 2026-01-05 is already a day off: it was already \
                       exchanged for working on 2026-01-03"
            ),
        );
    }

    #[test]
    fn transfer_dates_far_apart_are_rejected() {
        assert_eq!(
            transfer_error("[[transfer]]\nwork = \"2026-01-03\"\nrest = \"2027-01-05\"\n"),
            "transfer data, line 1: transfer #1: `work` date 2026-01-03 and `rest` date \
             2027-01-05 are 367 days apart, more than 366"
        );
    }

    #[test]
    fn toml_shape_errors_name_the_line() {
        let unknown_key = WorkingCalendar::kazakhstan()
            .with_transfers_toml("[[transfer]]\nwork = \"2026-01-03\"\nrset = \"2026-01-05\"\n")
            .unwrap_err();
        assert!(
            matches!(unknown_key, CalendarError::Syntax { line: Some(3), .. }),
            "{unknown_key:?}"
        );
        assert!(unknown_key.to_string().contains("rset"), "{unknown_key}");

        let missing_field = transfer_error("[[transfer]]\nwork = \"2026-01-03\"\n");
        assert!(missing_field.contains("rest"), "{missing_field}");

        let number = transfer_error("[[transfer]]\nwork = 20260103\nrest = \"2026-01-05\"\n");
        assert_eq!(
            number,
            "transfer data, line 2: transfer #1: `work` is the integer `20260103`, expected a \
             YYYY-MM-DD date"
        );

        let date_time =
            transfer_error("[[transfer]]\nwork = 2026-01-03T10:00:00\nrest = \"2026-01-05\"\n");
        assert!(
            date_time.starts_with(
                "transfer data, line 2: transfer #1: `work` is `2026-01-03T10:00:00`, expected"
            ),
            "{date_time}"
        );

        let broken_syntax = transfer_error("[[transfer]\nwork = \"2026-01-03\"\n");
        assert!(
            broken_syntax.starts_with("transfer data, line 1: "),
            "{broken_syntax}"
        );

        let holidays_in_transfer_file = transfer_error(
            "[[holiday]]\ndate = \"2026-01-05\"\nname_ru = \"x\"\nname_en = \"x\"\n",
        );
        assert!(
            holidays_in_transfer_file.contains("holiday"),
            "{holidays_in_transfer_file}"
        );
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("absent.toml");
        let error = WorkingCalendar::from_toml_file(&path).unwrap_err();
        assert!(matches!(error, CalendarError::ReadFile { .. }), "{error:?}");
        assert!(
            error.to_string().starts_with(&format!(
                "failed to read calendar file `{}`: ",
                path.display()
            )),
            "{error}"
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let transfer_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            transfer_file.path(),
            "[[transfer]]\nwork = \"2026-01-05\"\nrest = \"2026-01-06\"\n",
        )
        .unwrap();
        let error = WorkingCalendar::from_toml_file(transfer_file.path()).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "calendar file `{}`, line 1: transfer #1: `work` date 2026-01-05 is a Monday",
                transfer_file.path().display()
            )),
            "{error}"
        );
    }

    #[test]
    fn holiday_data_errors_are_reported() {
        let parse = |text: &str| {
            WorkingCalendar::from_holiday_toml(text, "test data")
                .unwrap_err()
                .to_string()
        };
        let header = "first_year = 2026\nlast_year = 2027\n";
        assert_eq!(
            parse(&format!(
                "{header}[[holiday]]\nmonth = 2\nday = 30\nname_ru = \"x\"\nname_en = \"Bad\"\n"
            )),
            "test data, line 3: holiday #1 (Bad): February 30 does not exist in 2026"
        );
        assert_eq!(
            parse(&format!(
                "{header}[[holiday]]\nmonth = 13\nday = 1\nname_ru = \"x\"\nname_en = \"Bad\"\n"
            )),
            "test data, line 3: holiday #1 (Bad): month 13 is not 1 to 12"
        );
        assert_eq!(
            parse(&format!(
                "{header}[[holiday]]\ndate = \"2031-01-01\"\nname_ru = \"x\"\nname_en = \"Late\"\n"
            )),
            "test data, line 3: holiday #1 (Late): 2031-01-01 is outside the covered years 2026-2027"
        );
        assert_eq!(
            parse(&format!(
                "{header}[[holiday]]\nmonth = 3\nname_ru = \"x\"\nname_en = \"Half\"\n"
            )),
            "test data, line 3: holiday #1 (Half): give either `date`, or both `month` and `day`"
        );
        assert_eq!(
            parse(&format!(
                "{header}[[holiday]]\nmonth = 3\nday = 22\nname_ru = \"x\"\nname_en = \"A\"\n\
                 [[holiday]]\ndate = \"2027-03-22\"\nname_ru = \"y\"\nname_en = \"B\"\n"
            )),
            "test data, line 8: holiday #2 (B): 2027-03-22 is already the holiday A"
        );
        assert_eq!(
            parse("first_year = 2027\nlast_year = 2026\n"),
            "test data, line 2: last_year: 2026 is before first_year 2027"
        );
    }
}
