//! The Kazakhstan individual identification number (IIN, ЖСН/ИИН) of a person.
//!
//! Layout of the 12 digits: `YYMMDD` date of birth, one digit for century and sex, a four-digit
//! serial and a check digit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};
use time::{Date, Month};

/// Number of digits in an IIN.
const IIN_LENGTH: usize = 12;

/// Weights of the first check-digit pass.
const FIRST_PASS_WEIGHTS: [u32; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// Weights of the second pass, used when the first one gives 10.
const SECOND_PASS_WEIGHTS: [u32; 11] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2];

/// Largest serial that fits the four serial digits.
const MAX_SERIAL: u16 = 9_999;

/// A validated individual identification number of a person: 12 ASCII digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct Iin(String);

/// Sex encoded in the seventh digit of an IIN.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Sex {
    /// Odd century digit: 1, 3, 5.
    Male,
    /// Even century digit: 2, 4, 6.
    Female,
}

/// Why a string is not a valid IIN.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IinError {
    /// The string does not have exactly 12 characters.
    #[error("iin must have 12 digits, found {length} characters")]
    WrongLength {
        /// Number of characters found.
        length: usize,
    },
    /// A character is not an ASCII digit.
    #[error("iin character {position} is `{character}`, expected a digit")]
    NonDigit {
        /// 1-based position of the character.
        position: usize,
        /// The offending character.
        character: char,
    },
    /// The seventh digit is not one of 1 to 6.
    #[error("iin digit 7 (century and sex) is {digit}, expected 1 to 6")]
    InvalidCenturyDigit {
        /// The digit found.
        digit: u8,
    },
    /// The first six digits are not a calendar date in the century given by the seventh digit.
    #[error("iin digits 1-6 `{yymmdd}` are not a valid date of birth in the {century}s")]
    InvalidBirthDate {
        /// The first six digits as found.
        yymmdd: String,
        /// First year of the century from the seventh digit: 1800, 1900 or 2000.
        century: i32,
    },
    /// The twelfth digit does not match the digit computed from the first eleven.
    #[error("iin check digit is {found}, expected {expected}")]
    CheckDigitMismatch {
        /// Check digit computed from the first eleven digits.
        expected: u8,
        /// Check digit found in the twelfth position.
        found: u8,
    },
    /// Both check-digit passes give 10, so no IIN is ever issued with these first eleven digits.
    #[error("iin cannot exist: both check-digit passes give 10 for its first 11 digits")]
    UnissuableSerial,
}

impl Iin {
    /// Validates `text` as an IIN; surrounding whitespace is not accepted.
    pub fn parse(text: &str) -> Result<Iin, IinError> {
        let length = text.chars().count();
        if length != IIN_LENGTH {
            return Err(IinError::WrongLength { length });
        }
        let mut digits = [0u8; IIN_LENGTH];
        for (index, character) in text.chars().enumerate() {
            // `char::is_numeric` would let digits of other scripts through.
            if !character.is_ascii_digit() {
                return Err(IinError::NonDigit {
                    position: index + 1,
                    character,
                });
            }
            digits[index] = character as u8 - b'0';
        }
        let century_digit = digits[6];
        let Some(century) = century_of(century_digit) else {
            return Err(IinError::InvalidCenturyDigit {
                digit: century_digit,
            });
        };
        if birth_date_from_digits(&digits, century).is_none() {
            return Err(IinError::InvalidBirthDate {
                yymmdd: text[..6].to_string(),
                century,
            });
        }
        let first_eleven: [u8; 11] = std::array::from_fn(|index| digits[index]);
        let Some(expected) = check_digit(&first_eleven) else {
            return Err(IinError::UnissuableSerial);
        };
        let found = digits[11];
        if expected != found {
            return Err(IinError::CheckDigitMismatch { expected, found });
        }
        Ok(Iin(text.to_string()))
    }

    /// Builds the IIN of a person born on `birth_date` with the given sex and serial.
    ///
    /// Returns `None` when no such IIN can exist: the serial needs more than four digits, the birth
    /// year is outside 1800–2099, or both check-digit passes give 10 for this serial.
    pub fn from_parts(birth_date: Date, sex: Sex, serial: u16) -> Option<Iin> {
        if serial > MAX_SERIAL {
            return None;
        }
        let year = birth_date.year();
        if !(1800..=2099).contains(&year) {
            return None;
        }
        let century_index = (year - 1800) / 100;
        let century_digit = match sex {
            Sex::Male => 1 + 2 * century_index,
            Sex::Female => 2 + 2 * century_index,
        };
        let prefix = format!(
            "{:02}{:02}{:02}{}{:04}",
            year % 100,
            u8::from(birth_date.month()),
            birth_date.day(),
            century_digit,
            serial
        );
        let first_eleven: [u8; 11] = std::array::from_fn(|index| prefix.as_bytes()[index] - b'0');
        let check = check_digit(&first_eleven)?;
        Some(Iin(format!("{prefix}{check}")))
    }

    /// The 12 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Date of birth encoded in digits 1–7.
    pub fn birth_date(&self) -> Date {
        let digits = self.digits();
        // `parse` and `from_parts` only build IINs whose date decodes, so the fallback is unreachable.
        century_of(digits[6])
            .and_then(|century| birth_date_from_digits(&digits, century))
            .unwrap_or(Date::MIN)
    }

    /// Sex encoded in digit 7.
    pub fn sex(&self) -> Sex {
        if self.digits()[6] % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// Age in whole years on `date`; 0 for dates before the birth.
    ///
    /// A person born on 29 February gets a year older on 1 March in non-leap years.
    pub fn age_on(&self, date: Date) -> u32 {
        let birth_date = self.birth_date();
        let birthday_passed = (u8::from(date.month()), date.day())
            >= (u8::from(birth_date.month()), birth_date.day());
        let full_years = date.year() - birth_date.year() - i32::from(!birthday_passed);
        u32::try_from(full_years).unwrap_or(0)
    }

    /// The 12 digits as numbers.
    fn digits(&self) -> [u8; IIN_LENGTH] {
        let bytes = self.0.as_bytes();
        std::array::from_fn(|index| bytes[index] - b'0')
    }
}

/// First year of the century for a seventh digit, `None` for 0 and 7–9.
fn century_of(century_digit: u8) -> Option<i32> {
    if !(1..=6).contains(&century_digit) {
        return None;
    }
    Some(1800 + 100 * i32::from((century_digit - 1) / 2))
}

/// The date in digits 1–6 within `century`, `None` if it does not exist (30 February, month 13).
fn birth_date_from_digits(digits: &[u8; IIN_LENGTH], century: i32) -> Option<Date> {
    let year = century + i32::from(digits[0] * 10 + digits[1]);
    let month = Month::try_from(digits[2] * 10 + digits[3]).ok()?;
    let day = digits[4] * 10 + digits[5];
    Date::from_calendar_date(year, month, day).ok()
}

/// Check digit of the first 11 digits, `None` when both passes give 10.
fn check_digit(first_eleven: &[u8; 11]) -> Option<u8> {
    let weighted_remainder = |weights: &[u32; 11]| -> u32 {
        let sum: u32 = first_eleven
            .iter()
            .zip(weights)
            .map(|(digit, weight)| u32::from(*digit) * weight)
            .sum();
        sum % 11
    };
    let first_remainder = weighted_remainder(&FIRST_PASS_WEIGHTS);
    let remainder = if first_remainder == 10 {
        weighted_remainder(&SECOND_PASS_WEIGHTS)
    } else {
        first_remainder
    };
    if remainder == 10 {
        return None;
    }
    u8::try_from(remainder).ok()
}

impl fmt::Display for Iin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl FromStr for Iin {
    type Err = IinError;

    fn from_str(text: &str) -> Result<Iin, IinError> {
        Iin::parse(text)
    }
}

impl TryFrom<String> for Iin {
    type Error = IinError;

    fn try_from(text: String) -> Result<Iin, IinError> {
        Iin::parse(&text)
    }
}

impl AsRef<str> for Iin {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Iin {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    // 850115 3 0000 1: male, born 1985-01-15.
    // Pass 1: 8·1 + 5·2 + 0·3 + 1·4 + 1·5 + 5·6 + 3·7 + 0·8 + 0·9 + 0·10 + 0·11
    //       = 8 + 10 + 0 + 4 + 5 + 30 + 21 = 78; 78 mod 11 = 1 → check digit 1.
    const MALE_1985: &str = "850115300001";

    // 900228 4 0000 4: female, born 1990-02-28.
    // Pass 1: 9·1 + 0·2 + 0·3 + 2·4 + 2·5 + 8·6 + 4·7 + 0 + 0 + 0 + 0
    //       = 9 + 8 + 10 + 48 + 28 = 103; 103 mod 11 = 4 → check digit 4.
    const FEMALE_1990: &str = "900228400004";

    // 110721 6 0020 6: female, born 2011-07-21; the first pass gives 10.
    // Pass 1: 1·1 + 1·2 + 0·3 + 7·4 + 2·5 + 1·6 + 6·7 + 0·8 + 0·9 + 2·10 + 0·11
    //       = 1 + 2 + 28 + 10 + 6 + 42 + 20 = 109; 109 mod 11 = 10 → second pass.
    // Pass 2: 1·3 + 1·4 + 0·5 + 7·6 + 2·7 + 1·8 + 6·9 + 0·10 + 0·11 + 2·1 + 0·2
    //       = 3 + 4 + 42 + 14 + 8 + 54 + 2 = 127; 127 mod 11 = 6 → check digit 6.
    const SECOND_PASS_FEMALE_2011: &str = "110721600206";

    // 850115 3 0028 ?: both passes give 10, so no check digit makes it valid.
    // Pass 1: 78 (as above) + 2·10 + 8·11 = 186; 186 mod 11 = 10.
    // Pass 2: 8·3 + 5·4 + 0·5 + 1·6 + 1·7 + 5·8 + 3·9 + 0·10 + 0·11 + 2·1 + 8·2
    //       = 24 + 20 + 6 + 7 + 40 + 27 + 2 + 16 = 142; 142 mod 11 = 10.
    const UNISSUABLE_PREFIX: &str = "85011530028";

    #[test]
    fn literal_iins_are_valid() {
        let male = Iin::parse(MALE_1985).unwrap();
        assert_eq!(male.birth_date(), date!(1985 - 01 - 15));
        assert_eq!(male.sex(), Sex::Male);
        assert_eq!(male.as_str(), MALE_1985);

        let female = Iin::parse(FEMALE_1990).unwrap();
        assert_eq!(female.birth_date(), date!(1990 - 02 - 28));
        assert_eq!(female.sex(), Sex::Female);
    }

    #[test]
    fn second_pass_decides_check_digit() {
        let iin = Iin::parse(SECOND_PASS_FEMALE_2011).unwrap();
        assert_eq!(iin.birth_date(), date!(2011 - 07 - 21));
        assert_eq!(iin.sex(), Sex::Female);
        // The first-pass remainder, 10, is not a digit, so any other check digit is wrong.
        assert_eq!(
            Iin::parse("110721600200"),
            Err(IinError::CheckDigitMismatch {
                expected: 6,
                found: 0
            })
        );
        assert_eq!(
            Iin::from_parts(date!(2011 - 07 - 21), Sex::Female, 20).unwrap(),
            iin
        );
    }

    #[test]
    fn both_passes_giving_ten_is_rejected() {
        for check in 0..=9 {
            let text = format!("{UNISSUABLE_PREFIX}{check}");
            assert_eq!(Iin::parse(&text), Err(IinError::UnissuableSerial), "{text}");
        }
        assert_eq!(Iin::from_parts(date!(1985 - 01 - 15), Sex::Male, 28), None);
    }

    #[test]
    fn every_century_digit_decodes_century_and_sex() {
        let cases = [
            (date!(1885 - 03 - 04), Sex::Male, '1'),
            (date!(1885 - 03 - 04), Sex::Female, '2'),
            (date!(1985 - 03 - 04), Sex::Male, '3'),
            (date!(1985 - 03 - 04), Sex::Female, '4'),
            (date!(2005 - 03 - 04), Sex::Male, '5'),
            (date!(2005 - 03 - 04), Sex::Female, '6'),
        ];
        for (birth_date, sex, century_digit) in cases {
            let built = (0..=MAX_SERIAL)
                .find_map(|serial| Iin::from_parts(birth_date, sex, serial))
                .unwrap();
            assert_eq!(built.as_str().chars().nth(6), Some(century_digit));
            let parsed = Iin::parse(built.as_str()).unwrap();
            assert_eq!(parsed.birth_date(), birth_date);
            assert_eq!(parsed.sex(), sex);
        }
    }

    #[test]
    fn from_parts_round_trips_through_parse() {
        let mut built_count = 0;
        for serial in 0..200 {
            let Some(iin) = Iin::from_parts(date!(1999 - 12 - 31), Sex::Female, serial) else {
                continue;
            };
            built_count += 1;
            assert_eq!(Iin::parse(iin.as_str()), Ok(iin.clone()));
            assert_eq!(&iin.as_str()[7..11], format!("{serial:04}"));
        }
        // About one serial in eleven hits 10 twice, so most serials must be usable.
        assert!(built_count > 150, "only {built_count} serials usable");
    }

    #[test]
    fn from_parts_rejects_what_cannot_be_encoded() {
        assert_eq!(
            Iin::from_parts(date!(1985 - 01 - 15), Sex::Male, 10_000),
            None
        );
        assert_eq!(Iin::from_parts(date!(1799 - 12 - 31), Sex::Male, 1), None);
        assert_eq!(Iin::from_parts(date!(2100 - 01 - 01), Sex::Male, 1), None);
    }

    #[test]
    fn impossible_birth_dates_are_rejected() {
        // Check digits are irrelevant: the date is checked first.
        assert_eq!(
            Iin::parse("990230300000"),
            Err(IinError::InvalidBirthDate {
                yymmdd: "990230".to_string(),
                century: 1900
            })
        );
        assert!(matches!(
            Iin::parse("991301300000"),
            Err(IinError::InvalidBirthDate { .. })
        ));
        assert!(matches!(
            Iin::parse("990100300000"),
            Err(IinError::InvalidBirthDate { .. })
        ));
        // 1900 is not a leap year, 2000 is: the same digits 1-6 depend on digit 7.
        assert_eq!(
            Iin::parse("000229300000"),
            Err(IinError::InvalidBirthDate {
                yymmdd: "000229".to_string(),
                century: 1900
            })
        );
        let leap_day = Iin::from_parts(date!(2000 - 02 - 29), Sex::Male, 1).unwrap();
        assert!(leap_day.as_str().starts_with("0002295"));
        assert_eq!(
            Iin::parse("990230300000").unwrap_err().to_string(),
            "iin digits 1-6 `990230` are not a valid date of birth in the 1900s"
        );
    }

    #[test]
    fn non_digits_are_rejected_with_position() {
        assert_eq!(
            Iin::parse("85011530000X"),
            Err(IinError::NonDigit {
                position: 12,
                character: 'X'
            })
        );
        assert_eq!(
            Iin::parse(" 85011530000"),
            Err(IinError::NonDigit {
                position: 1,
                character: ' '
            })
        );
        // Non-ASCII digits such as Arabic-Indic ٣ are not accepted.
        assert_eq!(
            Iin::parse("85011٣300001"),
            Err(IinError::NonDigit {
                position: 6,
                character: '٣'
            })
        );
        assert_eq!(
            Iin::parse("85011530000X").unwrap_err().to_string(),
            "iin character 12 is `X`, expected a digit"
        );
    }

    #[test]
    fn wrong_length_is_rejected() {
        assert_eq!(Iin::parse(""), Err(IinError::WrongLength { length: 0 }));
        assert_eq!(
            Iin::parse("85011530000"),
            Err(IinError::WrongLength { length: 11 })
        );
        assert_eq!(
            Iin::parse("8501153000011"),
            Err(IinError::WrongLength { length: 13 })
        );
        // Length counts characters, not bytes.
        assert_eq!(
            Iin::parse("ЖСН850115300"),
            Err(IinError::NonDigit {
                position: 1,
                character: 'Ж'
            })
        );
        assert_eq!(
            Iin::parse("85011530000").unwrap_err().to_string(),
            "iin must have 12 digits, found 11 characters"
        );
    }

    #[test]
    fn wrong_check_digit_is_rejected() {
        assert_eq!(
            Iin::parse("850115300002"),
            Err(IinError::CheckDigitMismatch {
                expected: 1,
                found: 2
            })
        );
        assert_eq!(
            Iin::parse("850115300002").unwrap_err().to_string(),
            "iin check digit is 2, expected 1"
        );
    }

    #[test]
    fn century_digits_zero_and_seven_to_nine_are_rejected() {
        for digit in [0u8, 7, 8, 9] {
            let text = format!("850115{digit}00001");
            assert_eq!(
                Iin::parse(&text),
                Err(IinError::InvalidCenturyDigit { digit }),
                "{text}"
            );
        }
        assert_eq!(
            Iin::parse("850115700001").unwrap_err().to_string(),
            "iin digit 7 (century and sex) is 7, expected 1 to 6"
        );
    }

    #[test]
    fn serde_round_trip_as_string() {
        let iin = Iin::parse(MALE_1985).unwrap();
        let json = serde_json::to_string(&iin).unwrap();
        assert_eq!(json, format!("\"{MALE_1985}\""));
        let decoded: Iin = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, iin);

        let error = serde_json::from_str::<Iin>("\"850115300002\"").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("iin check digit is 2, expected 1"),
            "{error}"
        );
        assert!(serde_json::from_str::<Iin>("850115300001").is_err());
    }

    #[test]
    fn from_str_and_display_agree() {
        let iin: Iin = FEMALE_1990.parse().unwrap();
        assert_eq!(iin.to_string(), FEMALE_1990);
        assert_eq!(
            "bad".parse::<Iin>(),
            Err(IinError::WrongLength { length: 3 })
        );
    }

    #[test]
    fn age_changes_on_the_birthday() {
        let iin = Iin::parse(MALE_1985).unwrap();
        assert_eq!(iin.age_on(date!(2025 - 01 - 14)), 39);
        assert_eq!(iin.age_on(date!(2025 - 01 - 15)), 40);
        assert_eq!(iin.age_on(date!(2025 - 12 - 31)), 40);
        assert_eq!(iin.age_on(date!(1985 - 01 - 15)), 0);
        assert_eq!(iin.age_on(date!(1980 - 06 - 01)), 0);
    }

    #[test]
    fn leap_day_birthday_counts_from_first_of_march() {
        let iin = Iin::from_parts(date!(2000 - 02 - 29), Sex::Female, 7).unwrap();
        assert_eq!(iin.age_on(date!(2018 - 02 - 28)), 17);
        assert_eq!(iin.age_on(date!(2018 - 03 - 01)), 18);
        assert_eq!(iin.age_on(date!(2020 - 02 - 29)), 20);
    }
}
