//! Just enough of gRPC's length-prefixed message framing to hash and count messages as they pass:
//! each message is a 1-byte compression flag, a 4-byte big-endian length, then the payload.

use ring::digest::{Context, SHA256};

/// Size of the prefix before every message.
pub const PREFIX_LENGTH: usize = 5;

/// The single message of a unary request body, or why the body is not one message.
pub fn single_message(body: &[u8]) -> Result<&[u8], &'static str> {
    if body.len() < PREFIX_LENGTH {
        return Err("the request body is not a gRPC message");
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != PREFIX_LENGTH + length {
        return Err("a unary request must carry exactly one gRPC message");
    }
    Ok(&body[PREFIX_LENGTH..])
}

/// Hashes the payloads of a stream of gRPC messages split arbitrarily across data frames.
pub struct PayloadHasher {
    digest: Context,
    prefix: [u8; PREFIX_LENGTH],
    prefix_filled: usize,
    payload_remaining: usize,
    messages: u64,
    bytes: u64,
}

impl Default for PayloadHasher {
    fn default() -> Self {
        Self {
            digest: Context::new(&SHA256),
            prefix: [0; PREFIX_LENGTH],
            prefix_filled: 0,
            payload_remaining: 0,
            messages: 0,
            bytes: 0,
        }
    }
}

impl PayloadHasher {
    /// Feeds the next chunk of the body.
    pub fn update(&mut self, mut chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        while !chunk.is_empty() {
            if self.payload_remaining > 0 {
                let take = self.payload_remaining.min(chunk.len());
                self.digest.update(&chunk[..take]);
                self.payload_remaining -= take;
                chunk = &chunk[take..];
                continue;
            }
            let take = (PREFIX_LENGTH - self.prefix_filled).min(chunk.len());
            self.prefix[self.prefix_filled..self.prefix_filled + take]
                .copy_from_slice(&chunk[..take]);
            self.prefix_filled += take;
            chunk = &chunk[take..];
            if self.prefix_filled == PREFIX_LENGTH {
                self.payload_remaining = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                self.prefix_filled = 0;
                self.messages += 1;
            }
        }
    }

    /// Total body bytes seen, prefixes included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The SHA-256 of the concatenated payloads, or `None` when no message passed.
    pub fn finish(self) -> Option<[u8; 32]> {
        if self.messages == 0 {
            return None;
        }
        let digest = self.digest.finish();
        let mut hash = [0_u8; 32];
        hash.copy_from_slice(digest.as_ref());
        Some(hash)
    }
}

/// Parses a `grpc-timeout` header value (e.g. `150m`, `2S`) into a duration.
pub fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    let duration = match unit {
        "H" => std::time::Duration::from_secs(amount.checked_mul(3600)?),
        "M" => std::time::Duration::from_secs(amount.checked_mul(60)?),
        "S" => std::time::Duration::from_secs(amount),
        "m" => std::time::Duration::from_millis(amount),
        "u" => std::time::Duration::from_micros(amount),
        "n" => std::time::Duration::from_nanos(amount),
        _ => return None,
    };
    Some(duration)
}

/// Formats a duration as a `grpc-timeout` value (milliseconds, at least 1).
pub fn format_grpc_timeout(duration: std::time::Duration) -> String {
    format!("{}m", duration.as_millis().clamp(1, 99_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut framed = vec![0_u8];
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(payload);
        framed
    }

    #[test]
    fn hashes_payloads_split_at_any_point() {
        let mut body = frame(b"hello");
        body.extend(frame(b" world"));
        let mut whole = PayloadHasher::default();
        whole.update(&body);
        let expected = whole.finish();
        for split in 0..body.len() {
            let mut hasher = PayloadHasher::default();
            hasher.update(&body[..split]);
            hasher.update(&body[split..]);
            assert_eq!(hasher.finish(), expected, "split at {split}");
        }
        let direct = ring::digest::digest(&SHA256, b"hello world");
        assert_eq!(
            expected.map(|hash| hash.to_vec()),
            Some(direct.as_ref().to_vec())
        );
    }

    #[test]
    fn single_message_requires_exactly_one() {
        assert_eq!(single_message(&frame(b"abc")), Ok(&b"abc"[..]));
        let mut two = frame(b"a");
        two.extend(frame(b"b"));
        assert!(single_message(&two).is_err());
        assert!(single_message(&[0, 0]).is_err());
    }

    #[test]
    fn grpc_timeout_round_trip() {
        assert_eq!(
            parse_grpc_timeout("150m"),
            Some(std::time::Duration::from_millis(150))
        );
        assert_eq!(
            parse_grpc_timeout("2S"),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("10X"), None);
        assert_eq!(
            format_grpc_timeout(std::time::Duration::from_millis(1500)),
            "1500m"
        );
    }
}
