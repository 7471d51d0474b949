//! `linkreg gen`: realistic synthetic links, the same file for the same seed.
//!
//! ```text
//!   person i ──Feistel permutation──► slot (birth year, day of year, counter), unique per i
//!            ──kept with a year weight──► SSIN (5 % BIS: month + 20 or + 40)
//!            ──1 to 4 links──► (country, key type, value from a bijective mix of the row number)
//! ```
//!
//! Every SSIN is distinct (distinct slots give distinct numbers, whatever the BIS choice), and
//! every value is distinct within its (country, key type) because it encodes a bijection of the
//! global row number, so importing a generated file never meets `LINK_CONFLICT`. The stream is
//! prefix-stable: the first M rows for a seed are the same whatever the total asked for, which is
//! what lets `linkreg bench --preload 0` query what an import of `gen --seed S` stored.
//! Generation holds one person at a time: constant memory for any number of rows.

use std::fmt::Write as _;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use linkreg::domain::Ssin;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use time::{Date, Month};

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of links (rows) to write.
    #[arg(long)]
    links: u64,
    /// The same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Default: csv when --out ends in .csv, ndjson otherwise.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    fn for_path(path: Option<&Path>) -> Format {
        let csv = path
            .and_then(Path::extension)
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if csv { Format::Csv } else { Format::Ndjson }
    }
}

/// The CSV header `linkreg import` reads.
pub const CSV_HEADER: &str = "ssin,country,key_type,value,valid_from,valid_to";

/// One generated link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub ssin: Ssin,
    pub country: &'static str,
    pub key_type: &'static str,
    /// As a person would enter it (sometimes with blanks, dots, hyphens or slashes).
    pub value: String,
    pub valid_from: Option<Date>,
    pub valid_to: Option<Date>,
}

/// Country codes of foreign keys, weighted after Belgium's neighbours and its main foreign-born
/// communities. Belgium itself is absent: its own keys are not foreign.
const COUNTRIES: &[(&str, u32)] = &[
    ("FR", 14),
    ("NL", 13),
    ("IT", 9),
    ("MA", 8),
    ("RO", 7),
    ("DE", 6),
    ("PL", 6),
    ("ES", 5),
    ("PT", 5),
    ("TR", 5),
    ("LU", 3),
    ("GB", 3),
    ("BG", 3),
    ("CD", 2),
    ("UA", 2),
    ("US", 2),
    ("GR", 1),
    ("SY", 1),
    ("AF", 1),
    ("IN", 1),
    ("CN", 1),
    ("BR", 1),
    ("CM", 1),
    ("DZ", 1),
    ("TN", 1),
    ("RU", 1),
    ("IE", 1),
    ("AT", 1),
    ("CH", 1),
];

/// Countries that issue eIDAS identifiers (EU/EEA members of the list above).
const EIDAS_COUNTRIES: &[&str] = &[
    "FR", "NL", "IT", "RO", "DE", "PL", "ES", "PT", "LU", "BG", "GR", "IE", "AT",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NationalNumber,
    Passport,
    IdentityCard,
    DrivingLicence,
    SocialSecurity,
    Pension,
    Tax,
    BirthCertificate,
    Eidas,
}

/// The seeded catalogue's codes and how often each occurs.
const KEY_TYPES: &[((Kind, &str), u32)] = &[
    ((Kind::Passport, "PASSPORT"), 25),
    ((Kind::IdentityCard, "IDENTITY_CARD"), 20),
    ((Kind::SocialSecurity, "SOCIAL_SECURITY_NUMBER"), 15),
    ((Kind::Tax, "TAX_NUMBER"), 10),
    ((Kind::NationalNumber, "NATIONAL_NUMBER"), 8),
    ((Kind::DrivingLicence, "DRIVING_LICENCE"), 8),
    ((Kind::Pension, "PENSION_NUMBER"), 6),
    ((Kind::BirthCertificate, "BIRTH_CERTIFICATE"), 4),
    ((Kind::Eidas, "EIDAS_IDENTIFIER"), 4),
];

const FIRST_YEAR: i32 = 1930;
const YEARS: u64 = 96; // 1930..=2025
const DAYS: u64 = 366;
/// Counters 001..=998: valid for national register and BIS numbers alike.
const COUNTERS: u64 = 998;
/// Every (birth year, day of year, counter) a person can get.
const SLOTS: u64 = YEARS * DAYS * COUNTERS;
const SLOT_BITS: u32 = 26;
const _: () = assert!(SLOTS <= 1 << SLOT_BITS);
const HALF_BITS: u32 = SLOT_BITS / 2;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;

/// Share of BIS numbers, links per person (1..=4), share with a validity period, and the share of
/// those that also end.
const BIS_SHARE: f64 = 0.05;
const LINKS_PER_PERSON: [u32; 4] = [60, 25, 10, 5];
const PERIOD_SHARE: f64 = 0.30;
const END_SHARE: f64 = 0.40;
/// A person's further links are in their first link's country this often.
const SAME_COUNTRY: f64 = 0.75;
/// Share of values written with separators, as people type them.
const SEPARATED: f64 = 0.15;

/// SplitMix64: derives independent keys from the seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A keyed bijection of `0..SLOTS`: a balanced Feistel network on 26 bits, walked until it
/// lands inside the range (each walk stays a bijection on the smaller range).
struct Permutation {
    keys: [u64; 4],
}

impl Permutation {
    fn round(half: u64, key: u64) -> u64 {
        let mut x = (half ^ key).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        x ^= x >> 32;
        x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        (x >> 29) & HALF_MASK
    }

    fn feistel(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> HALF_BITS, x & HALF_MASK);
        for key in self.keys {
            (left, right) = (right, left ^ Self::round(right, key));
        }
        (left << HALF_BITS) | right
    }

    fn apply(&self, x: u64) -> u64 {
        let mut y = self.feistel(x);
        while y >= SLOTS {
            y = self.feistel(y);
        }
        y
    }
}

/// A keyed bijection of `u32`: xor, then the two xor-shift/odd-multiply rounds of a known
/// integer hash, each step invertible.
fn mix32(x: u32, key: u32) -> u32 {
    let mut x = x ^ key;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^= x >> 16;
    x
}

/// Fewer people born long ago, most in the middle years, slightly fewer recently.
fn year_weight(year: i32) -> f64 {
    match year {
        ..1955 => 0.12 + 0.88 * f64::from(year - FIRST_YEAR) / 25.0,
        1955..2000 => 1.0,
        _ => 1.0 - 0.3 * f64::from(year - 2000) / 25.0,
    }
}

fn weighted<T>(rng: &mut ChaCha8Rng, table: &[(T, u32)]) -> usize {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (i, (_, w)) in table.iter().enumerate() {
        if pick < *w {
            return i;
        }
        pick -= w;
    }
    table.len() - 1
}

struct Person {
    ssin: Ssin,
    birth: Date,
    country: usize,
    remaining: u32,
    /// Key types this person already has a link of (bit per entry of KEY_TYPES).
    used: u16,
}

/// The stream of generated rows for one seed. Ends only when the SSIN space is used up (after
/// roughly 45 million rows).
pub struct Generator {
    rng: ChaCha8Rng,
    permutation: Permutation,
    value_key: u32,
    next_slot: u64,
    row: u64,
    person: Option<Person>,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut state = seed;
        let keys = [(); 4].map(|_| splitmix(&mut state));
        let value_key = splitmix(&mut state) as u32;
        Generator {
            rng: ChaCha8Rng::seed_from_u64(splitmix(&mut state)),
            permutation: Permutation { keys },
            value_key,
            next_slot: 0,
            row: 0,
            person: None,
        }
    }

    fn next_person(&mut self) -> Option<Person> {
        while self.next_slot < SLOTS {
            let slot = self.permutation.apply(self.next_slot);
            self.next_slot += 1;
            let counter = (slot % COUNTERS) as u16 + 1;
            let rest = slot / COUNTERS;
            let ordinal = (rest % DAYS) as u16 + 1;
            let year = FIRST_YEAR + (rest / DAYS) as i32;
            // Day 366 of a common year does not exist.
            let Ok(birth) = Date::from_ordinal_date(year, ordinal) else {
                continue;
            };
            if !self.rng.random_bool(year_weight(year)) {
                continue;
            }
            let month = u8::from(birth.month());
            let encoded_month = if self.rng.random_bool(BIS_SHARE) {
                month + if self.rng.random_bool(0.5) { 20 } else { 40 }
            } else {
                month
            };
            let Ok(ssin) = Ssin::compose(year, encoded_month, birth.day(), counter) else {
                debug_assert!(false, "every slot composes a valid SSIN");
                continue;
            };
            let links = weighted(&mut self.rng, &LINKS_PER_PERSON.map(|w| ((), w))) as u32 + 1;
            let country = weighted(&mut self.rng, COUNTRIES);
            return Some(Person {
                ssin,
                birth,
                country,
                remaining: links,
                used: 0,
            });
        }
        None
    }

    fn link(&mut self, mut person: Person) -> (Person, Row) {
        let rng = &mut self.rng;
        let first = person.used == 0;
        let country = if first || rng.random_bool(SAME_COUNTRY) {
            person.country
        } else {
            weighted(rng, COUNTRIES)
        };
        let code = COUNTRIES[country].0;
        let no_eidas = !EIDAS_COUNTRIES.contains(&code);
        let kind = loop {
            let k = weighted(rng, KEY_TYPES);
            let eidas = KEY_TYPES[k].0.0 == Kind::Eidas;
            if person.used & (1 << k) == 0 && !(eidas && no_eidas) {
                break k;
            }
        };
        person.used |= 1 << kind;
        person.remaining -= 1;
        let ((kind_tag, key_type), _) = KEY_TYPES[kind];
        // The row number is below 2^32 (checked by the caller), so the mix is a bijection.
        let m = mix32(self.row as u32, self.value_key);
        self.row += 1;
        let separated = rng.random_bool(SEPARATED);
        let value = format_value(kind_tag, code, m, person.birth, separated);
        let (valid_from, valid_to) = if rng.random_bool(PERIOD_SHARE) {
            period(rng, kind_tag, person.birth)
        } else {
            (None, None)
        };
        let row = Row {
            ssin: person.ssin,
            country: code,
            key_type,
            value,
            valid_from,
            valid_to,
        };
        (person, row)
    }
}

impl Iterator for Generator {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        let person = match self.person.take() {
            Some(p) if p.remaining > 0 => p,
            _ => self.next_person()?,
        };
        let (person, row) = self.link(person);
        self.person = Some(person);
        Some(row)
    }
}

/// Rows beyond this would reuse a value of the mix.
pub const MAX_ROWS: u64 = 1 << 32;

/// A validity period: from a date after birth (and not before 1990) up to 2025; sometimes an end
/// one to ten years later. A birth certificate's period starts at birth and never ends.
fn period(rng: &mut ChaCha8Rng, kind: Kind, birth: Date) -> (Option<Date>, Option<Date>) {
    if kind == Kind::BirthCertificate {
        return (Some(birth), None);
    }
    let earliest = birth.max(date(1990, Month::January, 1));
    let latest = date(2025, Month::December, 31).max(earliest);
    let from_day = rng.random_range(earliest.to_julian_day()..=latest.to_julian_day());
    let from = Date::from_julian_day(from_day).unwrap_or(earliest);
    let to = rng.random_bool(END_SHARE).then(|| {
        let days = rng.random_range(365..=3652);
        Date::from_julian_day(from_day + days).unwrap_or(from)
    });
    (Some(from), to)
}

fn date(year: i32, month: Month, day: u8) -> Date {
    Date::from_calendar_date(year, month, day).unwrap_or(Date::MIN)
}

/// The value of a key of `kind`, encoding `m` at a fixed position so that distinct `m` give
/// distinct normalized values. None of them starts with `BENCH` (the prefix of `linkreg bench`'s
/// own creates).
fn format_value(kind: Kind, country: &str, m: u32, birth: Date, separated: bool) -> String {
    let yy = birth.year() % 100;
    let digits = m % 10_000_000;
    let high = m / 10_000_000; // < 430
    let letter = |n: u32| char::from(b'A' + (n % 26) as u8);
    let check = m % 7 + m % 3;
    let mut s = String::with_capacity(24);
    // Writing to a String cannot fail.
    let _ = match kind {
        Kind::Passport => {
            let sep = if separated { " " } else { "" };
            write!(s, "{}{}{sep}{digits:07}", letter(high / 26), letter(high))
        }
        Kind::IdentityCard => {
            // First letter fixed per country: the rest still encodes m.
            let c = country.as_bytes();
            let first = letter(u32::from(c[0]) * 7 + u32::from(c[1]));
            let sep = if separated { "-" } else { "" };
            write!(
                s,
                "{first}{}{}{sep}{digits:07}",
                letter(high / 26),
                letter(high)
            )
        }
        Kind::DrivingLicence if separated => write!(
            s,
            "{:02} {:04} {:04}",
            m / 100_000_000,
            m / 10_000 % 10_000,
            m % 10_000
        ),
        Kind::DrivingLicence => write!(s, "{m:010}"),
        Kind::SocialSecurity => {
            let sex = 1 + m % 2;
            let sep = if separated { " " } else { "" };
            write!(s, "{sex}{sep}{yy:02}{sep}{m:010}")
        }
        Kind::Pension if separated => write!(s, "P-{m:010}-{check}"),
        Kind::Pension => write!(s, "P{m:010}{check}"),
        Kind::Tax if separated => write!(
            s,
            "{:04}/{:03}/{:03}{check}",
            m / 1_000_000,
            m / 1000 % 1000,
            m % 1000
        ),
        Kind::Tax => write!(s, "{m:010}{check}"),
        Kind::NationalNumber if separated => write!(s, "{yy:02}.{m:010}"),
        Kind::NationalNumber => write!(s, "{yy:02}{m:010}"),
        Kind::BirthCertificate => write!(s, "{}/{m:010}", birth.year()),
        Kind::Eidas => write!(s, "{country}/BE/{m:010}"),
    };
    s
}

fn write_date(out: &mut impl Write, d: Date) -> io::Result<()> {
    write!(
        out,
        "{:04}-{:02}-{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

/// One CSV line (no field ever holds a comma or a quote: the alphabets above have none).
pub fn write_csv(out: &mut impl Write, row: &Row) -> io::Result<()> {
    out.write_all(&row.ssin.ascii())?;
    write!(out, ",{},{},{},", row.country, row.key_type, row.value)?;
    if let Some(d) = row.valid_from {
        write_date(out, d)?;
    }
    out.write_all(b",")?;
    if let Some(d) = row.valid_to {
        write_date(out, d)?;
    }
    out.write_all(b"\n")
}

/// One NDJSON line (no field ever needs escaping: digits, capitals, blank, `.`, `-` and `/`).
pub fn write_ndjson(out: &mut impl Write, row: &Row) -> io::Result<()> {
    out.write_all(b"{\"ssin\":\"")?;
    out.write_all(&row.ssin.ascii())?;
    write!(
        out,
        "\",\"country\":\"{}\",\"key_type\":\"{}\",\"value\":\"{}\"",
        row.country, row.key_type, row.value
    )?;
    if let Some(d) = row.valid_from {
        out.write_all(b",\"valid_from\":\"")?;
        write_date(out, d)?;
        out.write_all(b"\"")?;
    }
    if let Some(d) = row.valid_to {
        out.write_all(b",\"valid_to\":\"")?;
        write_date(out, d)?;
        out.write_all(b"\"")?;
    }
    out.write_all(b"}\n")
}

/// Writes the first `links` rows of `seed` in `format`, calling `progress` every so often.
pub fn write_rows(
    out: &mut impl Write,
    seed: u64,
    links: u64,
    format: Format,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<()> {
    if links > MAX_ROWS {
        bail!("--links: at most {MAX_ROWS}");
    }
    if format == Format::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let mut written = 0u64;
    for row in Generator::new(seed).take(links as usize) {
        match format {
            Format::Csv => write_csv(out, &row)?,
            Format::Ndjson => write_ndjson(out, &row)?,
        }
        written += 1;
        if written.is_multiple_of(65_536) {
            progress(written);
        }
    }
    if written < links {
        bail!("the generator's SSIN space holds only {written} links; ask for fewer");
    }
    progress(written);
    out.flush()?;
    Ok(())
}

pub fn run(args: GenArgs) -> anyhow::Result<ExitCode> {
    let format = args
        .format
        .unwrap_or_else(|| Format::for_path(args.out.as_deref()));
    let bar = if io::stderr().is_terminal() {
        let bar = ProgressBar::new(args.links);
        let style = ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} links, {per_sec}, eta {eta}",
        )?;
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    };
    let progress = |n| bar.set_position(n);
    let result = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            write_rows(&mut out, args.seed, args.links, format, progress)
                .with_context(|| format!("writing {}", path.display()))
        }
        None => {
            let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            write_rows(&mut out, args.seed, args.links, format, progress)
        }
    };
    bar.finish_and_clear();
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `linkreg gen … | head`: the reader had enough.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use linkreg::domain::foreign_key::FormatRule;
    use linkreg::domain::{Country, Field, ForeignKeyValue, KeyTypeCode, ValidityPeriod};
    use serde_json::Value;

    use super::*;

    const TODAY: Date = time::macros::date!(2026 - 01 - 01);

    fn rows(seed: u64, n: usize) -> Vec<Row> {
        Generator::new(seed).take(n).collect()
    }

    fn file(seed: u64, n: u64, format: Format) -> String {
        let mut out = Vec::new();
        write_rows(&mut out, seed, n, format, |_| {}).expect("generates");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn the_same_seed_gives_the_same_rows_and_another_seed_others() {
        assert_eq!(rows(7, 2000), rows(7, 2000));
        assert_ne!(rows(7, 2000), rows(8, 2000));
        assert_eq!(file(7, 500, Format::Csv), file(7, 500, Format::Csv));
        // Prefix-stable: what bench regenerates is what an import of a larger file stored.
        assert_eq!(rows(7, 300)[..], rows(7, 3000)[..300]);
    }

    #[test]
    fn exactly_n_rows() {
        for n in [0, 1, 2, 3, 17, 1000] {
            let csv = file(3, n, Format::Csv);
            assert_eq!(csv.lines().count() as u64, n + 1, "{n}");
            assert_eq!(csv.lines().next(), Some(CSV_HEADER));
            let ndjson = file(3, n, Format::Ndjson);
            assert_eq!(ndjson.lines().count() as u64, n, "{n}");
        }
    }

    #[test]
    fn every_row_passes_the_domain_rules() {
        let default_rule = FormatRule::default_rule();
        let mut bis = 0;
        let mut years = HashMap::<i32, usize>::new();
        let all = rows(11, 20_000);
        for row in &all {
            let text = row.ssin.to_string();
            let parsed = Ssin::parse(&text, TODAY).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed, row.ssin);
            if parsed.kind() == linkreg::domain::SsinKind::Bis {
                bis += 1;
            }
            *years.entry(parsed.birth_date().year).or_default() += 1;
            let country = Country::parse(row.country).expect("an ISO country");
            assert_ne!(country.code(), "BE");
            let key_type = KeyTypeCode::parse(Field::KeyType, row.key_type).expect("a code");
            assert!(
                linkreg::domain::key_type::seed_catalogue()
                    .iter()
                    .any(|k| k.code == key_type),
                "{key_type} is in the seeded catalogue"
            );
            let value = ForeignKeyValue::parse(&row.value).expect("a value");
            default_rule
                .check(country, &key_type, &value)
                .unwrap_or_else(|e| panic!("{}: {e}", row.value));
            assert!(!value.normalized().starts_with("BENCH"), "{}", row.value);
            let from = row.valid_from.map(|d| d.to_string());
            let to = row.valid_to.map(|d| d.to_string());
            ValidityPeriod::parse(from.as_deref(), to.as_deref()).expect("a period");
            assert!(row.valid_to.is_none() || row.valid_from.is_some());
        }
        // About 5 % BIS numbers, about 30 % with a period, birth years 1930–2025 with the middle
        // years more common than the edges.
        let share = |n: usize| n as f64 / all.len() as f64;
        assert!((0.03..0.07).contains(&share(bis)), "BIS {bis}");
        let periods = all.iter().filter(|r| r.valid_from.is_some()).count();
        assert!((0.25..0.35).contains(&share(periods)), "periods {periods}");
        assert!(years.keys().all(|y| (1930..=2025).contains(y)));
        let around = |y: i32| {
            (y - 2..=y + 2)
                .map(|y| years.get(&y).unwrap_or(&0))
                .sum::<usize>()
        };
        assert!(around(1975) > 2 * around(1932), "{years:?}");
    }

    #[test]
    fn one_to_four_links_per_person_and_each_ssin_is_one_person() {
        let all = rows(5, 20_000);
        let mut seen = HashSet::new();
        let mut sizes = [0usize; 5];
        let mut i = 0;
        while i < all.len() {
            let ssin = all[i].ssin;
            assert!(seen.insert(ssin), "{ssin} comes back later");
            let n = all[i..].iter().take_while(|r| r.ssin == ssin).count();
            let last = i + n == all.len();
            assert!((1..=4).contains(&n) || last, "{ssin} has {n} links");
            let types: HashSet<_> = all[i..i + n].iter().map(|r| r.key_type).collect();
            assert_eq!(types.len(), n, "one link per key type and person");
            if !last {
                sizes[n] += 1;
            }
            i += n;
        }
        assert!(sizes[1] > sizes[2] && sizes[2] > sizes[3] && sizes[3] > sizes[4]);
        assert!(sizes[4] > 0, "{sizes:?}");
    }

    #[test]
    fn values_are_unique_per_country_and_key_type() {
        let mut seen = HashSet::new();
        for row in Generator::new(9).take(200_000) {
            let normalized = linkreg::domain::foreign_key::normalize(&row.value);
            assert!(
                seen.insert((row.country, row.key_type, normalized)),
                "{row:?} repeats a key"
            );
        }
    }

    #[test]
    fn the_permutation_is_a_bijection_on_a_small_sample() {
        let p = Generator::new(1).permutation;
        let images: HashSet<u64> = (0..200_000).map(|x| p.apply(x)).collect();
        assert_eq!(images.len(), 200_000);
        assert!(images.iter().all(|y| *y < SLOTS));
        let m: HashSet<u32> = (0..200_000).map(|x| mix32(x, 12345)).collect();
        assert_eq!(m.len(), 200_000);
    }

    fn csv_records(text: &str) -> Vec<HashMap<String, String>> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
        lines
            .map(|line| {
                let cells: Vec<&str> = line.split(',').collect();
                assert_eq!(cells.len(), header.len(), "{line}");
                header
                    .iter()
                    .zip(cells)
                    .filter(|(_, c)| !c.is_empty())
                    .map(|(h, c)| (h.to_string(), c.to_string()))
                    .collect()
            })
            .collect()
    }

    fn ndjson_records(text: &str) -> Vec<HashMap<String, String>> {
        text.lines()
            .map(|line| {
                let Value::Object(map) = serde_json::from_str(line).expect("JSON") else {
                    panic!("not an object: {line}");
                };
                map.into_iter()
                    .map(|(k, v)| (k, v.as_str().expect("a string").to_string()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn csv_and_ndjson_hold_the_same_records_under_the_import_field_names() {
        let csv = csv_records(&file(21, 3000, Format::Csv));
        let ndjson = ndjson_records(&file(21, 3000, Format::Ndjson));
        assert_eq!(csv, ndjson);
        let fields: HashSet<&str> = CSV_HEADER.split(',').collect();
        for (record, row) in csv.iter().zip(rows(21, 3000)) {
            assert!(record.keys().all(|k| fields.contains(k.as_str())));
            assert_eq!(record["ssin"], row.ssin.to_string());
            assert_eq!(record["country"], row.country);
            assert_eq!(record["key_type"], row.key_type);
            assert_eq!(record["value"], row.value);
            assert_eq!(
                record.get("valid_from"),
                row.valid_from.map(|d| d.to_string()).as_ref()
            );
            assert_eq!(
                record.get("valid_to"),
                row.valid_to.map(|d| d.to_string()).as_ref()
            );
        }
        assert!(csv.iter().any(|r| r.contains_key("valid_to")));
        assert!(csv.iter().any(|r| !r.contains_key("valid_from")));
    }

    #[test]
    fn the_format_follows_the_file_extension() {
        assert_eq!(Format::for_path(Some(Path::new("x.csv"))), Format::Csv);
        assert_eq!(Format::for_path(Some(Path::new("x.CSV"))), Format::Csv);
        assert_eq!(
            Format::for_path(Some(Path::new("x.ndjson"))),
            Format::Ndjson
        );
        assert_eq!(Format::for_path(Some(Path::new("x"))), Format::Ndjson);
        assert_eq!(Format::for_path(None), Format::Ndjson);
    }
}
