//! Timestamps on the wire (`#[serde(with = "crate::timestamp")]`): RFC 3339 in UTC, exactly as
//! chrono's own serde support writes them, without its path through `fmt` and serde's string
//! adapter on the way out or its general date parser on the way in. Every result and event carries
//! them, so workers and executors format and parse several per action.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{de, Deserializer, Serializer};

pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Rfc3339)
}

struct Rfc3339;

impl de::Visitor<'_> for Rfc3339 {
    type Value = DateTime<Utc>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<DateTime<Utc>, E> {
        // RFC 3339 proper by its own parser; anything else chrono's serde accepts (ISO 8601
        // extensions such as signed years) by the general one, as before.
        DateTime::parse_from_rfc3339(value)
            .or_else(|_| value.parse::<DateTime<FixedOffset>>())
            .map(|at| at.with_timezone(&Utc))
            .map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Chrono {
        at: DateTime<Utc>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ours {
        #[serde(with = "super")]
        at: DateTime<Utc>,
    }

    proptest! {
        /// Written as chrono writes it, for every precision the fraction takes; read back equal.
        #[test]
        fn the_same_text_as_chronos_and_back(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|ms| ms * 1_000_000),
                                 (0u32..1_000_000).prop_map(|us| us * 1000), 0u32..1_000_000_000],
        ) {
            let at = Utc.timestamp_opt(secs, nanos).unwrap();
            let ours = serde_json::to_string(&Ours { at }).unwrap();
            prop_assert_eq!(&ours, &serde_json::to_string(&Chrono { at }).unwrap());
            prop_assert_eq!(serde_json::from_str::<Ours>(&ours).unwrap().at, at);
        }
    }

    #[test]
    fn other_offsets_and_chronos_extensions_are_read_as_before() {
        for text in [
            "2026-11-26T16:20:00+02:00",
            "2026-11-26t14:20:00.5z",
            "2026-11-26 14:20:00Z",
            "+12026-11-26T14:20:00Z",
        ] {
            let json = format!(r#"{{"at":"{text}"}}"#);
            assert_eq!(
                serde_json::from_str::<Ours>(&json).unwrap().at,
                serde_json::from_str::<Chrono>(&json).unwrap().at,
                "{text}"
            );
        }
    }

    #[test]
    fn a_bad_timestamp_is_an_error_naming_it() {
        let e = serde_json::from_str::<Ours>(r#"{"at":"yesterday"}"#).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(serde_json::from_str::<Ours>(r#"{"at":17}"#)
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
    }
}
