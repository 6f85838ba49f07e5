//! Salesforce record ids: a 3-character key prefix naming the object (`003` Contact, `00Q` Lead,
//! `006` Opportunity, `069` ContentDocument/ContentNote, ...), 12 more case-sensitive base-62
//! characters (the 15-character id), then 3 characters that encode which of the 15 are upper
//! case (the 18-character case-safe id the API returns; `docs/crm-connectors.md` section 3.3).

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The three case-safe characters of a 15-character id.
pub fn suffix(id15: &str) -> String {
    let b = id15.as_bytes();
    (0..3)
        .map(|chunk| {
            let flags = (0..5).fold(0usize, |acc, i| {
                let upper = b.get(chunk * 5 + i).is_some_and(u8::is_ascii_uppercase);
                acc | (usize::from(upper) << i)
            });
            SUFFIX[flags] as char
        })
        .collect()
}

/// The 18-character id of record number `n` (from 1) with this key prefix.
pub fn make(prefix: &str, n: u64) -> String {
    let mut digits = Vec::new();
    let mut rest = n;
    while rest > 0 {
        digits.push(BASE62[(rest % 62) as usize]);
        rest /= 62;
    }
    let body: String = digits.iter().rev().map(|b| *b as char).collect();
    let id15 = format!("{prefix}{body:0>12}");
    let s = suffix(&id15);
    format!("{id15}{s}")
}

/// Reads an id as the API accepts it: 15 characters (case-sensitive), or 18 characters in any
/// case (the suffix says which letters are upper case). Returns the canonical 18-character form.
pub fn normalise(id: &str) -> Option<String> {
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(format!("{id}{}", suffix(id))),
        18 => {
            let (head, tail) = id.split_at(15);
            let mut out: Vec<u8> = head.as_bytes().to_vec();
            for (chunk, c) in tail.bytes().enumerate() {
                let flags = SUFFIX.iter().position(|s| *s == c.to_ascii_uppercase())?;
                for i in 0..5 {
                    let b = &mut out[chunk * 5 + i];
                    *b = if flags & (1 << i) != 0 {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    };
                }
            }
            let id15 = String::from_utf8(out).ok()?;
            let s = suffix(&id15);
            Some(format!("{id15}{s}"))
        }
        _ => None,
    }
}

/// The key prefix of an id (its first three characters).
pub fn prefix(id: &str) -> &str {
    id.get(..3).unwrap_or(id)
}

/// The 15-character form (what `EnterpriseUrl` and some messages carry).
pub fn short(id: &str) -> &str {
    id.get(..15).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_documented_examples_and_round_trip_any_case() {
        assert_eq!(make("00D", 1), "00D000000000001EAA");
        // A published Account id: the suffix encodes which of the 15 characters are capitals.
        assert_eq!(suffix("001D000000IqhSL"), "IAZ");
        let id = make("003", 62 * 62 * 10 + 36);
        assert_eq!(id.len(), 18);
        assert_eq!(
            normalise(&id.to_ascii_lowercase()).as_deref(),
            Some(id.as_str())
        );
        assert_eq!(normalise(&id[..15]).as_deref(), Some(id.as_str()));
        assert_eq!(normalise("003-bad"), None);
        assert_eq!(normalise("0030000000000"), None);
    }
}
