//! NATS subject matching, for the in-process bus.

/// Whether `subject` (no wildcards) matches `pattern` (tokens separated by `.`; `*` matches
/// exactly one token, a final `>` matches one or more tokens).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for pattern_token in pattern.split('.') {
        match (pattern_token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (literal, Some(token)) if literal == token => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

pub(crate) fn has_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|token| token == "*" || token == ">")
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn literal_subjects_match_only_themselves() {
        assert!(subject_matches("chat.msg.1", "chat.msg.1"));
        assert!(!subject_matches("chat.msg.1", "chat.msg.12"));
        assert!(!subject_matches("chat.msg", "chat.msg.1"));
        assert!(!subject_matches("chat.msg.1", "chat.msg"));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(subject_matches("chat.in.*", "chat.in.7"));
        assert!(!subject_matches("chat.in.*", "chat.in"));
        assert!(!subject_matches("chat.in.*", "chat.in.7.8"));
        assert!(subject_matches("chat.*.7", "chat.msg.7"));
    }

    #[test]
    fn greater_than_matches_the_rest() {
        assert!(subject_matches("chat.>", "chat.msg.7"));
        assert!(subject_matches("chat.>", "chat.msg"));
        assert!(!subject_matches("chat.>", "chat"));
        assert!(!subject_matches("other.>", "chat.msg"));
    }
}
