//! Message ids: chosen by the sender (chatd makes UUIDv7 strings, a control client may choose
//! its own), carried by the control `send` request and by the peer `msg`, `ack`, `acks` and
//! `nack` frames. One rule for all of them (protocol.md §1.2).

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize, Serializer};

/// Longest message id, in bytes (all allowed characters are ASCII).
pub const MAX_MSG_ID: usize = 128;

/// A validated message id: 1–[`MAX_MSG_ID`] printable ASCII characters without spaces (bytes
/// 0x21–0x7E).
///
/// Deserializing validates the string in place: a decoded id costs one scan of at most 128
/// bytes and no allocation beyond the `String` serde builds anyway.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct MsgId(String);

/// Written as the plain string, borrowed.
impl Serialize for MsgId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Why a string is not a message id. Every message states the whole rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgIdError {
    #[error(
        "message id must be 1-{MAX_MSG_ID} printable ASCII characters without spaces; it is empty"
    )]
    Empty,
    #[error("message id must be 1-{MAX_MSG_ID} printable ASCII characters without spaces; it is {0} bytes long")]
    TooLong(usize),
    #[error("message id must be 1-{MAX_MSG_ID} printable ASCII characters without spaces; it contains {0:?}")]
    BadChar(char),
}

impl MsgId {
    pub fn new(s: impl Into<String>) -> Result<Self, MsgIdError> {
        let s = s.into();
        check(&s)?;
        Ok(MsgId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The rule, on a borrowed string (the length first, so the scan is bounded).
pub fn check(s: &str) -> Result<(), MsgIdError> {
    if s.is_empty() {
        return Err(MsgIdError::Empty);
    }
    if s.len() > MAX_MSG_ID {
        return Err(MsgIdError::TooLong(s.len()));
    }
    match s.bytes().position(|b| !b.is_ascii_graphic()) {
        None => Ok(()),
        Some(i) => Err(MsgIdError::BadChar(
            s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER),
        )),
    }
}

impl TryFrom<String> for MsgId {
    type Error = MsgIdError;
    fn try_from(s: String) -> Result<Self, MsgIdError> {
        MsgId::new(s)
    }
}

impl From<MsgId> for String {
    fn from(id: MsgId) -> String {
        id.0
    }
}

impl std::str::FromStr for MsgId {
    type Err = MsgIdError;
    fn from_str(s: &str) -> Result<Self, MsgIdError> {
        MsgId::new(s)
    }
}

impl Deref for MsgId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for MsgId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_ascii_up_to_the_limit() {
        let uuid = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        for ok in ["m", "job-42", uuid, "a!~{}\"\\:@", &"x".repeat(MAX_MSG_ID)] {
            let id = MsgId::new(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(&*id, ok);
        }
    }

    #[test]
    fn refuses_empty_too_long_spaces_controls_and_non_ascii() {
        assert_eq!(MsgId::new(""), Err(MsgIdError::Empty));
        assert_eq!(
            MsgId::new("x".repeat(MAX_MSG_ID + 1)),
            Err(MsgIdError::TooLong(MAX_MSG_ID + 1))
        );
        assert_eq!(MsgId::new("a b"), Err(MsgIdError::BadChar(' ')));
        assert_eq!(MsgId::new("tab\there"), Err(MsgIdError::BadChar('\t')));
        assert_eq!(MsgId::new("nl\n"), Err(MsgIdError::BadChar('\n')));
        assert_eq!(MsgId::new("del\u{7f}"), Err(MsgIdError::BadChar('\u{7f}')));
        assert_eq!(MsgId::new("nul\0"), Err(MsgIdError::BadChar('\0')));
        assert_eq!(MsgId::new("café"), Err(MsgIdError::BadChar('é')));
        // Too long is about bytes: 65 two-byte characters are 130 bytes.
        assert_eq!(MsgId::new("é".repeat(65)), Err(MsgIdError::TooLong(130)));
        for e in [
            MsgIdError::Empty,
            MsgIdError::TooLong(200),
            MsgIdError::BadChar(' '),
        ] {
            assert!(e.to_string().contains("printable ASCII"), "{e}");
        }
    }

    #[test]
    fn serde_round_trips_as_a_plain_string_and_validates_on_the_way_in() {
        let id = MsgId::new("job-42").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"job-42\"");
        assert_eq!(serde_json::from_str::<MsgId>(&json).unwrap(), id);
        for bad in ["\"\"", "\"a b\"", "\"\\u0000\"", "\"\\u00e9\"", "17"] {
            assert!(serde_json::from_str::<MsgId>(bad).is_err(), "{bad}");
        }
        let long = format!("\"{}\"", "x".repeat(MAX_MSG_ID + 1));
        let e = serde_json::from_str::<MsgId>(&long).unwrap_err();
        assert!(e.to_string().contains("printable ASCII"), "{e}");
    }
}
