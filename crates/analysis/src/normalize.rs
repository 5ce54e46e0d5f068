//! Values as a call says them, turned into the table's types by code: the
//! model copies the words («двести тысяч», «в среду»), arithmetic and
//! calendars are done here (a small model gets them wrong).

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};

use crate::dialogue::{normalize_word, normalized_words, stem};
use crate::quotes::similar;

// --- numbers ------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// Digits as written, separators included: `1 500`, `1,5`, `300.000`.
    Digits(String),
    Word(String),
    /// Anything else that separates: `-`, `/`, `(`.
    Break,
}

fn pieces(text: &str) -> Vec<Piece> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let mut literal = String::new();
            while i < chars.len() {
                let c = chars[i];
                let next_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
                if c.is_ascii_digit() || ((c == ',' || c == '.') && next_digit) {
                    literal.push(c);
                } else if matches!(c, ' ' | '\u{a0}' | '\u{202f}') && is_group(&chars[i + 1..]) {
                    // «1 500 000»: spaces between groups of three digits.
                } else {
                    break;
                }
                i += 1;
            }
            out.push(Piece::Digits(literal));
        } else if c.is_alphabetic() {
            let mut word = String::new();
            while i < chars.len() && chars[i].is_alphabetic() {
                word.push(chars[i]);
                i += 1;
            }
            out.push(Piece::Word(normalize_word(&word)));
        } else {
            if !(c.is_whitespace() || c == '.' || c == ',') {
                out.push(Piece::Break);
            }
            i += 1;
        }
    }
    out
}

/// Exactly three digits follow, and then no digit.
fn is_group(rest: &[char]) -> bool {
    rest.len() >= 3
        && rest[..3].iter().all(char::is_ascii_digit)
        && !rest.get(3).is_some_and(char::is_ascii_digit)
}

fn digits_value(literal: &str, scale_follows: bool) -> Option<f64> {
    let commas = literal.matches(',').count();
    let dots = literal.matches('.').count();
    let plain: String = match (commas, dots) {
        (0, 0) => literal.to_string(),
        // «1,5», «2.75»; «1.500» and «300,000» are thousands unless a
        // scale word follows («1,500 млн» is rare, «1,5 млн» common).
        (1, 0) | (0, 1) => {
            let (int, frac) = literal.split_once([',', '.'])?;
            if frac.len() == 3 && !scale_follows && int != "0" {
                format!("{int}{frac}")
            } else {
                format!("{int}.{frac}")
            }
        }
        // «1,500,000», «1.500.000».
        (_, 0) | (0, _) => literal.replace([',', '.'], ""),
        // «1,500.50» or «1.500,50»: the last separator is the decimal one.
        _ => {
            let last = literal.rfind([',', '.'])?;
            let int: String = literal[..last].replace([',', '.'], "");
            format!("{int}.{}", &literal[last + 1..])
        }
    };
    plain.parse().ok()
}

/// Value and order of a number word: order 100 for hundreds, 10 for tens
/// and teens, 1 for units. Any case form.
fn number_word(word: &str) -> Option<(f64, u32)> {
    const UNITS: [(&[&str], f64); 10] = [
        (&["ноль", "нуль", "ноля", "нуля"], 0.0),
        (
            &[
                "один",
                "одна",
                "одно",
                "одного",
                "одной",
                "одну",
                "одним",
                "одном",
                "одному",
            ],
            1.0,
        ),
        (&["два", "две", "двух", "двум", "двумя"], 2.0),
        (&["три", "трех", "трем", "тремя"], 3.0),
        (&["четыре", "четырех", "четырем", "четырьмя"], 4.0),
        (&["пять", "пяти", "пятью"], 5.0),
        (&["шесть", "шести", "шестью"], 6.0),
        (&["семь", "семи", "семью"], 7.0),
        (&["восемь", "восьми", "восемью"], 8.0),
        (&["девять", "девяти", "девятью"], 9.0),
    ];
    const TEENS: [(&str, f64); 10] = [
        ("десят", 10.0),
        ("одиннадцат", 11.0),
        ("двенадцат", 12.0),
        ("тринадцат", 13.0),
        ("четырнадцат", 14.0),
        ("пятнадцат", 15.0),
        ("шестнадцат", 16.0),
        ("семнадцат", 17.0),
        ("восемнадцат", 18.0),
        ("девятнадцат", 19.0),
    ];
    const TENS: [(&[&str], f64); 8] = [
        (&["двадцать", "двадцати", "двадцатью"], 20.0),
        (&["тридцать", "тридцати", "тридцатью"], 30.0),
        (&["сорок", "сорока"], 40.0),
        (&["пятьдесят", "пятидесяти", "пятьюдесятью"], 50.0),
        (&["шестьдесят", "шестидесяти", "шестьюдесятью"], 60.0),
        (&["семьдесят", "семидесяти", "семьюдесятью"], 70.0),
        (&["восемьдесят", "восьмидесяти", "восемьюдесятью"], 80.0),
        (&["девяносто", "девяноста"], 90.0),
    ];
    const HUNDREDS: [(&[&str], f64); 9] = [
        (&["сто", "ста"], 100.0),
        (&["двести", "двухсот", "двумстам"], 200.0),
        (&["триста", "трехсот", "тремстам"], 300.0),
        (&["четыреста", "четырехсот", "четыремстам"], 400.0),
        (&["пятьсот", "пятисот", "пятистам"], 500.0),
        (&["шестьсот", "шестисот", "шестистам"], 600.0),
        (&["семьсот", "семисот", "семистам"], 700.0),
        (&["восемьсот", "восьмисот", "восьмистам"], 800.0),
        (&["девятьсот", "девятисот", "девятистам"], 900.0),
    ];
    let find = |table: &[(&[&str], f64)]| {
        table
            .iter()
            .find(|(forms, _)| forms.contains(&word))
            .map(|(_, v)| *v)
    };
    if let Some(v) = find(&HUNDREDS) {
        return Some((v, 100));
    }
    if let Some(v) = find(&TENS) {
        return Some((v, 10));
    }
    if let Some((_, v)) = TEENS.iter().find(|(base, _)| {
        word.strip_prefix(base)
            .is_some_and(|end| matches!(end, "ь" | "и" | "ью"))
    }) {
        return Some((*v, 10));
    }
    if matches!(word, "полтора" | "полторы" | "полутора") {
        return Some((1.5, 1));
    }
    find(&UNITS).map(|v| (v, 1))
}

fn scale_word(word: &str) -> Option<f64> {
    if word.starts_with("тысяч") || matches!(word, "тыс" | "тыща" | "тыщи" | "тыщ" | "к" | "k")
    {
        Some(1e3)
    } else if word.starts_with("миллион")
        || matches!(word, "млн" | "лям" | "ляма" | "лямов" | "m" | "mln")
    {
        Some(1e6)
    } else if word.starts_with("миллиард") || matches!(word, "млрд" | "ярд" | "ярда" | "ярдов")
    {
        Some(1e9)
    } else {
        None
    }
}

/// One number said in words, digits or both, with units and scales:
/// «двести тысяч», «1,5 млн», «300 тыс. рублей», «полтора миллиона»,
/// «два с половиной миллиона», «1 500 000». `None` when there is no
/// number, or more than one («от 100 до 200 тысяч»): a range is not a value.
pub fn parse_number(text: &str) -> Option<f64> {
    let pieces = pieces(&text.to_lowercase().replace('ё', "е"));
    let mut groups = Vec::new();
    let mut group = NumberGroup::default();
    let mut i = 0;
    while i < pieces.len() {
        let scale_follows =
            matches!(pieces.get(i + 1), Some(Piece::Word(w)) if scale_word(w).is_some());
        let consumed = match &pieces[i] {
            Piece::Digits(literal) => group.digits(digits_value(literal, scale_follows)?),
            Piece::Word(w)
                if w == "с"
                    && matches!(pieces.get(i + 1), Some(Piece::Word(h)) if h.starts_with("половин")) =>
            {
                i += 1;
                group.half()
            }
            Piece::Word(w) => match (number_word(w), scale_word(w)) {
                (Some((value, order)), _) => group.word(value, order),
                (None, Some(scale))
                    if group.started() || !matches!(w.as_str(), "к" | "k" | "m") =>
                {
                    group.scale(scale)
                }
                _ => Step::NotANumber,
            },
            Piece::Break => Step::NotANumber,
        };
        match consumed {
            Step::Taken => {}
            Step::Ambiguous => return None,
            Step::NotANumber => {
                if group.started() {
                    groups.push(group.value());
                    group = NumberGroup::default();
                }
            }
        }
        i += 1;
    }
    if group.started() {
        groups.push(group.value());
    }
    match groups.as_slice() {
        [value] => Some(*value),
        _ => None,
    }
}

enum Step {
    Taken,
    NotANumber,
    /// Words that do not make one number («пять два»).
    Ambiguous,
}

#[derive(Debug, Default)]
struct NumberGroup {
    total: f64,
    current: f64,
    started: bool,
    /// Orders still allowed to be added to `current` (after «сто» only
    /// tens and units, after «двадцать» only units …); 0 after digits.
    below: u32,
}

impl NumberGroup {
    fn started(&self) -> bool {
        self.started
    }

    fn value(&self) -> f64 {
        self.total + self.current
    }

    fn digits(&mut self, value: f64) -> Step {
        if self.started && self.below == 0 {
            return Step::Ambiguous;
        }
        if self.started && self.current != 0.0 {
            return Step::Ambiguous;
        }
        self.current += value;
        self.started = true;
        self.below = 0;
        Step::Taken
    }

    fn word(&mut self, value: f64, order: u32) -> Step {
        if self.started && order >= self.below {
            return Step::Ambiguous;
        }
        self.current += value;
        self.started = true;
        self.below = if value.fract() != 0.0 {
            0
        } else if (10.0..20.0).contains(&value) {
            1
        } else {
            order
        };
        Step::Taken
    }

    fn half(&mut self) -> Step {
        if !self.started || self.current == 0.0 {
            return Step::NotANumber;
        }
        self.current += 0.5;
        self.below = 0;
        Step::Taken
    }

    fn scale(&mut self, scale: f64) -> Step {
        let current = if self.current == 0.0 {
            1.0
        } else {
            self.current
        };
        self.total += current * scale;
        self.current = 0.0;
        self.started = true;
        self.below = 1000;
        Step::Taken
    }
}

// --- dates --------------------------------------------------------------

const MONTHS: [&str; 12] = [
    "январ",
    "феврал",
    "март",
    "апрел",
    "ма",
    "июн",
    "июл",
    "август",
    "сентябр",
    "октябр",
    "ноябр",
    "декабр",
];

fn month_word(word: &str) -> Option<u32> {
    if matches!(word, "май" | "мая" | "мае") {
        return Some(5);
    }
    MONTHS
        .iter()
        .position(|m| {
            *m != "ма" && word.starts_with(m) && word.chars().count() <= m.chars().count() + 2
        })
        .map(|i| i as u32 + 1)
}

fn weekday_word(word: &str) -> Option<Weekday> {
    Some(match word {
        w if w.starts_with("понедельник") => Weekday::Mon,
        w if w.starts_with("вторник") => Weekday::Tue,
        "среда" | "среду" | "среды" | "среде" => Weekday::Wed,
        w if w.starts_with("четверг") => Weekday::Thu,
        w if w.starts_with("пятниц") => Weekday::Fri,
        w if w.starts_with("суббот") => Weekday::Sat,
        w if w.starts_with("воскресень") => Weekday::Sun,
        _ => return None,
    })
}

/// Day of the month in ordinal words: «пятого», «двадцать пятого».
fn ordinal_day(words: &[String]) -> Option<u32> {
    const ORDINALS: [(&str, u32); 21] = [
        ("одиннадцат", 11),
        ("двенадцат", 12),
        ("тринадцат", 13),
        ("четырнадцат", 14),
        ("пятнадцат", 15),
        ("шестнадцат", 16),
        ("семнадцат", 17),
        ("восемнадцат", 18),
        ("девятнадцат", 19),
        ("двадцат", 20),
        ("тридцат", 30),
        ("перв", 1),
        ("втор", 2),
        ("трет", 3),
        ("четверт", 4),
        ("пят", 5),
        ("шест", 6),
        ("седьм", 7),
        ("восьм", 8),
        ("девят", 9),
        ("десят", 10),
    ];
    let value = |w: &str| {
        ORDINALS
            .iter()
            .find(|(prefix, _)| w.starts_with(prefix))
            .map(|(_, v)| *v)
    };
    match words {
        [.., tens, unit] if matches!(tens.as_str(), "двадцать" | "тридцать") => {
            Some(value(tens)? + value(unit).filter(|v| *v < 10)?)
        }
        [.., last] => value(last),
        [] => None,
    }
}

/// A date as a call says it, against the day of the call: «25 ноября»,
/// «двадцать пятого ноября», «25.11», «2025-11-25», «завтра»,
/// «послезавтра», «в среду» (the next Wednesday after the call),
/// «в следующую среду» (Wednesday of the next week), «через неделю»,
/// «через 3 дня», «через месяц». A day and month without a year take the
/// year that puts the date nearest the call. `None` when it is not a date.
pub fn parse_date(text: &str, call_date: NaiveDate) -> Option<NaiveDate> {
    let text = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(date);
    }
    if let Some(date) = numeric_date(text, call_date) {
        return Some(date);
    }
    let words = normalized_words(&text.replace(['.', ','], " "));
    let has = |prefix: &str| words.iter().any(|w| w.starts_with(prefix));

    for (word, days) in [
        ("позавчера", -2),
        ("послезавтра", 2),
        ("завтра", 1),
        ("вчера", -1),
        ("сегодня", 0),
    ] {
        if words.iter().any(|w| w.starts_with(word)) {
            return call_date.checked_add_signed(chrono::Duration::days(days));
        }
    }

    if let Some(at) = words.iter().position(|w| month_word(w).is_some()) {
        let month = month_word(&words[at])?;
        let before = &words[..at];
        let day = match before.last() {
            Some(w) if w.starts_with(|c: char| c.is_ascii_digit()) => w
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()?,
            _ => ordinal_day(before)?,
        };
        let year = words
            .get(at + 1)
            .filter(|w| w.len() == 4 && w.chars().all(|c| c.is_ascii_digit()))
            .and_then(|w| w.parse().ok());
        return dated(year, month, day, call_date);
    }

    if let Some(weekday) = words.iter().find_map(|w| weekday_word(w)) {
        let today = call_date.weekday().num_days_from_monday();
        let target = weekday.num_days_from_monday();
        let ahead = if has("следующ") {
            7 - today + target
        } else {
            match (7 + target - today) % 7 {
                0 => 7,
                n => n,
            }
        };
        return call_date.checked_add_days(Days::new(u64::from(ahead)));
    }

    if let Some(at) = words.iter().position(|w| w == "через") {
        let rest = &words[at + 1..];
        let unit_at = rest.iter().position(|w| {
            w.starts_with("дн")
                || w.starts_with("ден")
                || w.starts_with("недел")
                || w.starts_with("месяц")
        })?;
        let count = if unit_at == 0 {
            1.0
        } else {
            parse_number(&rest[..unit_at].join(" "))?
        };
        if count.fract() != 0.0 || !(1.0..=366.0).contains(&count) {
            return None;
        }
        let count = count as u32;
        let unit = &rest[unit_at];
        return if unit.starts_with("месяц") {
            call_date.checked_add_months(Months::new(count))
        } else if unit.starts_with("недел") {
            call_date.checked_add_days(Days::new(u64::from(count) * 7))
        } else {
            call_date.checked_add_days(Days::new(u64::from(count)))
        };
    }
    None
}

/// `25.11.2025`, `25.11.25`, `25/11`, `25.11`.
fn numeric_date(text: &str, call_date: NaiveDate) -> Option<NaiveDate> {
    let parts: Vec<&str> = text.split(['.', '/']).map(str::trim).collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 4 || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let day = parts[0].parse().ok()?;
    let month = parts[1].parse().ok()?;
    let year = match parts.get(2) {
        Some(y) if y.len() == 2 => Some(2000 + y.parse::<i32>().ok()?),
        Some(y) if y.len() == 4 => Some(y.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    dated(year, month, day, call_date)
}

fn dated(year: Option<i32>, month: u32, day: u32, call_date: NaiveDate) -> Option<NaiveDate> {
    if let Some(year) = year {
        return NaiveDate::from_ymd_opt(year, month, day);
    }
    let y = call_date.year();
    [y - 1, y, y + 1]
        .into_iter()
        .filter_map(|y| NaiveDate::from_ymd_opt(y, month, day))
        .min_by_key(|d| (*d - call_date).num_days().abs())
}

// --- booleans and enums -------------------------------------------------

/// «да», «нет», `true`, `false` and their kin.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match normalize_word(text).as_str() {
        "да" | "true" | "yes" | "верно" | "конечно" | "1" => Some(true),
        "нет" | "false" | "no" | "неверно" | "0" => Some(false),
        _ => None,
    }
}

/// The enum value `text` names: exactly, up to case, `ё` and punctuation,
/// in another word form, or contained in it once («пластиковые окна» →
/// «окна»). `None` when none or several fit.
pub(crate) fn match_enum(text: &str, values: &[String]) -> Option<String> {
    if let Some(v) = values.iter().find(|v| v.as_str() == text) {
        return Some(v.clone());
    }
    let words = normalized_words(text);
    if let Some(v) = values.iter().find(|v| normalized_words(v) == words) {
        return Some(v.clone());
    }
    let stems = |s: &str| -> Vec<String> { normalized_words(s).iter().map(|w| stem(w)).collect() };
    let text_stems = stems(text);
    if text_stems.is_empty() {
        return None;
    }
    if let Some(v) = values.iter().find(|v| stems(v) == text_stems) {
        return Some(v.clone());
    }
    let close: Vec<&String> = values
        .iter()
        .filter(|v| {
            let value_words = normalized_words(v);
            value_words.len() == words.len()
                && value_words
                    .iter()
                    .zip(&words)
                    .all(|(a, b)| similar(a, &stem(a), b, &stem(b)))
        })
        .collect();
    if let [one] = close.as_slice() {
        return Some((*one).clone());
    }
    let contained: Vec<&String> = values
        .iter()
        .filter(|v| {
            let vs = stems(v);
            !vs.is_empty() && text_stems.windows(vs.len()).any(|w| w == vs.as_slice())
        })
        .collect();
    match contained.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_words_digits_and_units() {
        let cases: &[(&str, Option<f64>)] = &[
            ("300000", Some(300_000.0)),
            ("300 000", Some(300_000.0)),
            ("1 500 000 рублей", Some(1_500_000.0)),
            ("двести тысяч", Some(200_000.0)),
            ("где-то двести тысяч рублей", Some(200_000.0)),
            ("около двухсот тысяч", Some(200_000.0)),
            ("1,5 млн", Some(1_500_000.0)),
            ("1.5 млн", Some(1_500_000.0)),
            ("300 тыс.", Some(300_000.0)),
            ("300к", Some(300_000.0)),
            ("полтора миллиона", Some(1_500_000.0)),
            ("полторы тысячи", Some(1_500.0)),
            ("два с половиной миллиона", Some(2_500_000.0)),
            ("два миллиона триста тысяч", Some(2_300_000.0)),
            ("2 миллиона 300 тысяч", Some(2_300_000.0)),
            ("сто двадцать пять", Some(125.0)),
            ("тысяча пятьсот", Some(1_500.0)),
            ("миллион", Some(1_000_000.0)),
            ("двадцать пять тысяч", Some(25_000.0)),
            ("пятнадцать", Some(15.0)),
            ("одиннадцати", Some(11.0)),
            ("три квартиры", Some(3.0)),
            ("2,75", Some(2.75)),
            ("1.500", Some(1_500.0)),
            ("0,125", Some(0.125)),
            ("от 100 до 200 тысяч", None),
            ("пять два", None),
            ("не знаю", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_number(text), *expected, "{text}");
        }
    }

    #[test]
    fn dates_against_the_call_date() {
        // A Friday.
        let call = NaiveDate::from_ymd_opt(2025, 11, 21).unwrap();
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        let cases: &[(&str, Option<NaiveDate>)] = &[
            ("2025-12-01", d(2025, 12, 1)),
            ("завтра", d(2025, 11, 22)),
            ("Послезавтра утром", d(2025, 11, 23)),
            ("сегодня вечером", d(2025, 11, 21)),
            ("вчера", d(2025, 11, 20)),
            ("в среду", d(2025, 11, 26)),
            ("в пятницу", d(2025, 11, 28)),
            ("в понедельник", d(2025, 11, 24)),
            ("в следующую среду", d(2025, 11, 26)),
            ("в следующий понедельник", d(2025, 11, 24)),
            ("25 ноября", d(2025, 11, 25)),
            ("25-го ноября", d(2025, 11, 25)),
            ("двадцать пятого ноября", d(2025, 11, 25)),
            ("первого декабря", d(2025, 12, 1)),
            ("3 мая 2026", d(2026, 5, 3)),
            ("10 января", d(2026, 1, 10)),
            ("25.11", d(2025, 11, 25)),
            ("25.11.2025", d(2025, 11, 25)),
            ("05/01/26", d(2026, 1, 5)),
            ("через неделю", d(2025, 11, 28)),
            ("через 3 дня", d(2025, 11, 24)),
            ("через два месяца", d(2026, 1, 21)),
            ("31 февраля", None),
            ("в ноябре", None),
            ("как-нибудь потом", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_date(text, call), *expected, "{text}");
        }
        // From a Wednesday, «в среду» is the next one.
        let wednesday = NaiveDate::from_ymd_opt(2025, 11, 19).unwrap();
        assert_eq!(parse_date("в среду", wednesday), d(2025, 11, 26));
        assert_eq!(
            parse_date("в следующую пятницу", wednesday),
            d(2025, 11, 28)
        );
        assert_eq!(parse_date("в пятницу", wednesday), d(2025, 11, 21));
    }

    #[test]
    fn booleans_and_enums() {
        assert_eq!(parse_bool("Да."), Some(true));
        assert_eq!(parse_bool("нет"), Some(false));
        assert_eq!(parse_bool("может быть"), None);
        let values: Vec<String> = ["Окна", "Двери", "Натяжные потолки"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = |t: &str| match_enum(t, &values);
        assert_eq!(m("Окна").as_deref(), Some("Окна"));
        assert_eq!(m("окна").as_deref(), Some("Окна"));
        assert_eq!(m("окно").as_deref(), Some("Окна"));
        assert_eq!(m("пластиковые окна").as_deref(), Some("Окна"));
        assert_eq!(m("натяжной потолок").as_deref(), Some("Натяжные потолки"));
        assert_eq!(m("окна и двери"), None);
        assert_eq!(m("крыша"), None);
    }
}
