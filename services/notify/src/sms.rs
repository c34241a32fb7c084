//! SMS facts: languages, phone numbers (Kazakhstan E.164), masking for responses and logs, and
//! how many segments a text takes (GSM-7 160/153 characters, UCS-2 70/67 for Cyrillic and
//! Kazakh letters).

use shlyuz_kit::error::ApiError;

/// Language of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Kazakh.
    Kk,
    /// Russian.
    Ru,
}

impl Language {
    /// The code stored in the database.
    pub fn code(self) -> &'static str {
        match self {
            Language::Kk => "kk",
            Language::Ru => "ru",
        }
    }

    /// The language of a stored code; Kazakh (the state language) for anything else.
    pub fn from_code(code: &str) -> Language {
        match code {
            "ru" => Language::Ru,
            _ => Language::Kk,
        }
    }
}

/// Normalises a phone to E.164 `+7XXXXXXXXXX`: accepts `+7…`, `8…` and `7…` with spaces, dashes
/// and brackets. Anything else is `INVALID_ARGUMENT` naming `field`.
pub fn normalize_phone(field: &str, raw: &str) -> Result<String, ApiError> {
    let digits: String = raw
        .chars()
        .filter(|character| !matches!(character, ' ' | '-' | '(' | ')' | '+'))
        .collect();
    if digits.is_empty() || !digits.chars().all(|character| character.is_ascii_digit()) {
        return Err(ApiError::invalid_field(
            field,
            "must be a phone number like +77011234567",
        ));
    }
    let national = match (digits.len(), digits.as_bytes()[0]) {
        (11, b'7') | (11, b'8') => &digits[1..],
        (10, _) => digits.as_str(),
        _ => {
            return Err(ApiError::invalid_field(
                field,
                "must be a Kazakhstan number of 10 digits after +7",
            ));
        }
    };
    Ok(format!("+7{national}"))
}

/// The phone with all but the last four digits hidden (`+7******4567`).
pub fn mask_phone(phone: &str) -> String {
    let characters: Vec<char> = phone.chars().collect();
    if characters.len() <= 4 {
        return "*".repeat(characters.len());
    }
    let visible_from = characters.len() - 4;
    characters
        .iter()
        .enumerate()
        .map(|(index, character)| {
            if index < 2 || index >= visible_from {
                *character
            } else {
                '*'
            }
        })
        .collect()
}

/// Characters of the GSM 03.38 default alphabet (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the GSM 03.38 extension table (an escape plus one septet: two each).
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

/// How a text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsEncoding {
    /// The GSM 7-bit default alphabet.
    Gsm7,
    /// UCS-2 (any character outside GSM-7, e.g. Cyrillic or Kazakh letters).
    Ucs2,
}

/// How many segments `text` takes, and in which encoding.
pub fn segment_count(text: &str) -> (SmsEncoding, usize) {
    let gsm_units: Option<usize> = text
        .chars()
        .map(|character| {
            if GSM7_BASIC.contains(character) {
                Some(1)
            } else if GSM7_EXTENSION.contains(character) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    match gsm_units {
        Some(units) => (SmsEncoding::Gsm7, segments(units, 160, 153)),
        None => {
            let units = text.encode_utf16().count();
            (SmsEncoding::Ucs2, segments(units, 70, 67))
        }
    }
}

fn segments(units: usize, single: usize, concatenated: usize) -> usize {
    if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        units.div_ceil(concatenated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_text_counts_gsm7_segments() {
        assert_eq!(segment_count(&"a".repeat(160)), (SmsEncoding::Gsm7, 1));
        assert_eq!(segment_count(&"a".repeat(161)), (SmsEncoding::Gsm7, 2));
        assert_eq!(segment_count(&"a".repeat(306)), (SmsEncoding::Gsm7, 2));
        assert_eq!(segment_count(&"a".repeat(307)), (SmsEncoding::Gsm7, 3));
        // The euro sign needs an escape: 80 of them fill one segment.
        assert_eq!(segment_count(&"€".repeat(80)), (SmsEncoding::Gsm7, 1));
        assert_eq!(segment_count(&"€".repeat(81)), (SmsEncoding::Gsm7, 2));
    }

    #[test]
    fn cyrillic_and_kazakh_letters_count_ucs2_segments() {
        assert_eq!(segment_count(&"ж".repeat(70)), (SmsEncoding::Ucs2, 1));
        assert_eq!(segment_count(&"ж".repeat(71)), (SmsEncoding::Ucs2, 2));
        assert_eq!(segment_count(&"ә".repeat(134)), (SmsEncoding::Ucs2, 2));
        assert_eq!(segment_count(&"ә".repeat(135)), (SmsEncoding::Ucs2, 3));
        // One Kazakh letter turns a Latin text into UCS-2.
        assert_eq!(
            segment_count(&format!("{}қ", "a".repeat(100))),
            (SmsEncoding::Ucs2, 2)
        );
    }

    #[test]
    fn phones_are_normalised_or_refused_by_field() {
        assert_eq!(
            normalize_phone("phone", "+7 (701) 123-45-67").expect("valid"),
            "+77011234567"
        );
        assert_eq!(
            normalize_phone("phone", "87011234567").expect("valid"),
            "+77011234567"
        );
        let error = normalize_phone("recipient_phone", "12345").expect_err("too short");
        assert_eq!(error.field_violations()[0].field, "recipient_phone");
        assert_eq!(mask_phone("+77011234567"), "+7******4567");
    }
}
