//! AIP-158 pagination shared by every List method: `page_size` (0 → default, capped) and opaque
//! `page_token`s that carry the last key of the previous page and the list they belong to, so a
//! token of one listing (or of the same listing with other filters) is refused, not misread.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;

/// Page size when the request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page returned, whatever the request asks.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Separates the scope of a token from its key; scopes never contain it.
const TOKEN_SEPARATOR: char = '\n';

/// The page size to use for `requested`: 0 means [`DEFAULT_PAGE_SIZE`], anything above
/// [`MAX_PAGE_SIZE`] is capped, a negative value is `INVALID_ARGUMENT` naming `page_size`.
pub fn page_size(requested: i32) -> Result<usize, ApiError> {
    match usize::try_from(requested) {
        Err(_) => Err(ApiError::invalid_field(
            "page_size",
            format!("must not be negative, got {requested}"),
        )),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
    }
}

/// The token that resumes the listing `scope` after `last_key`.
pub fn encode_page_token(scope: &str, last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}{TOKEN_SEPARATOR}{last_key}"))
}

/// The last key of the previous page, `None` for the first page (empty token). A token that was
/// not returned by the listing `scope` is `INVALID_ARGUMENT` naming `page_token`.
pub fn decode_page_token(token: &str, scope: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed =
        || ApiError::invalid_field("page_token", "is not a token returned by this list");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let Some((token_scope, last_key)) = text.split_once(TOKEN_SEPARATOR) else {
        return Err(malformed());
    };
    if token_scope != scope || last_key.is_empty() {
        return Err(malformed());
    }
    Ok(Some(last_key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::summarize_status;

    #[test]
    fn page_size_defaults_caps_and_refuses_negatives() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(5_000).unwrap(), MAX_PAGE_SIZE);
        let status: tonic::Status = page_size(-1).unwrap_err().into();
        assert_eq!(summarize_status(&status).fields, vec!["page_size"]);
    }

    #[test]
    fn token_round_trips_within_its_scope_only() {
        let token = encode_page_token("entries/sender=a", "1700000000000|chain|42");
        assert_eq!(
            decode_page_token(&token, "entries/sender=a")
                .unwrap()
                .as_deref(),
            Some("1700000000000|chain|42")
        );
        assert!(decode_page_token(&token, "entries/sender=b").is_err());
        assert_eq!(decode_page_token("", "anything").unwrap(), None);
        for garbage in [
            "!!!",
            "bm8tc2VwYXJhdG9y",
            &encode_page_token("entries/sender=a", ""),
        ] {
            let status: tonic::Status = decode_page_token(garbage, "entries/sender=a")
                .unwrap_err()
                .into();
            assert_eq!(
                summarize_status(&status).fields,
                vec!["page_token"],
                "{garbage}"
            );
        }
    }
}
