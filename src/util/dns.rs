//! Kubernetes' DNS names (RFC 1123), as `k8s.io/apimachinery/pkg/util/validation` checks them.

/// A DNS label: 1–63 lowercase alphanumerics or `-`, starting and ending alphanumeric
/// (namespaces, cluster names, control-plane names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS subdomain: dot-separated labels, at most 253 bytes (most object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "kudo", "a-1", "0abc", &"x".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("instances.kudo.dev"));
        assert!(!is_dns_subdomain("kudo..dev"));
        assert!(!is_dns_subdomain(&"a.".repeat(127)));
    }
}
