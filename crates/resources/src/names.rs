//! Kubernetes name rules, checked before anything is sent to the API server: a restore
//! that would create half its objects and then find a namespace name the server refuses
//! is refused up front instead, and names read from a repository (untrusted) never reach
//! a request path unless they are names Kubernetes itself could have stored.

/// Why `name` is not a DNS-1123 label (namespaces, Services): at most 63 characters of
/// lower-case letters, digits and `-`, starting and ending with a letter or digit.
pub fn dns_label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > 63 {
        return Some(format!(
            "it has {} characters, at most 63 are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "{c:?} is not allowed: use lower-case letters, digits and '-'"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("it must start and end with a letter or digit".into());
    }
    None
}

/// Why `name` cannot be an object name in a request path: empty, `.` or `..`, or holding
/// `/` or `%` (the API server refuses these for every kind), or longer than 253.
pub fn path_segment_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not allowed"));
    }
    if name.contains('/') || name.contains('%') {
        return Some("'/' and '%' are not allowed in names".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "it has {} characters, at most 253 are allowed",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Some("control characters are not allowed".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["shop", "a", "shop-2", "0abc"] {
            assert_eq!(dns_label_problem(ok), None, "{ok}");
        }
        for bad in ["", "Bad_NS!", "-a", "a-", "UPPER", &"a".repeat(64), "a.b"] {
            assert!(dns_label_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn path_segments() {
        for ok in ["web", "a.b", "system:controller", "Mixed_Case"] {
            assert_eq!(path_segment_problem(ok), None, "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a%2f", "a\nb"] {
            assert!(path_segment_problem(bad).is_some(), "{bad}");
        }
    }
}
