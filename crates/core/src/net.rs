//! Where a connection goes: the kinds of address, and a resolver that never answers a
//! link-local address (169.254.0.0/16, fe80::/10: cloud metadata services), so that a name that
//! changes what it resolves to after it was checked still cannot lead there.

/// What kind of network an address is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    LinkLocal,
    Private,
    Public,
}

pub fn address_kind(ip: std::net::IpAddr) -> AddressKind {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                AddressKind::LinkLocal
            } else if v4.is_loopback() || v4.is_private() || v4.is_unspecified() {
                AddressKind::Private
            } else {
                AddressKind::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return address_kind(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if first & 0xffc0 == 0xfe80 {
                AddressKind::LinkLocal
            } else if v6.is_loopback() || v6.is_unspecified() || first & 0xfe00 == 0xfc00 {
                AddressKind::Private
            } else {
                AddressKind::Public
            }
        }
    }
}

/// Resolves `host` and keeps the addresses a connection may go to: never a link-local one. An
/// error names the host when nothing is left.
pub async fn resolve_reachable(
    host: &str,
    port: u16,
) -> std::io::Result<Vec<std::net::SocketAddr>> {
    let all: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let kept: Vec<_> = all
        .iter()
        .copied()
        .filter(|a| address_kind(a.ip()) != AddressKind::LinkLocal)
        .collect();
    if kept.is_empty() && !all.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "`{host}` resolves to a link-local address ({}): connections never go there",
                all[0].ip()
            ),
        ));
    }
    Ok(kept)
}

/// Refuses `host` when any address it resolves to is link-local: for a driver that resolves the
/// name again itself, where dropping those addresses here would not keep it from them.
pub async fn refuse_link_local(host: &str, port: u16) -> std::io::Result<()> {
    let all: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    match all
        .iter()
        .find(|a| address_kind(a.ip()) == AddressKind::LinkLocal)
    {
        Some(a) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "`{host}` resolves to a link-local address ({}): connections never go there",
                a.ip()
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let k = |s: &str| address_kind(s.parse().unwrap());
        assert_eq!(k("169.254.169.254"), AddressKind::LinkLocal);
        assert_eq!(k("fe80::1"), AddressKind::LinkLocal);
        assert_eq!(k("::ffff:169.254.169.254"), AddressKind::LinkLocal);
        assert_eq!(k("127.0.0.1"), AddressKind::Private);
        assert_eq!(k("10.1.2.3"), AddressKind::Private);
        assert_eq!(k("fd00::1"), AddressKind::Private);
        assert_eq!(k("8.8.8.8"), AddressKind::Public);
    }

    #[tokio::test]
    async fn a_name_for_a_link_local_address_is_refused() {
        let e = resolve_reachable("169.254.169.254", 80).await.unwrap_err();
        assert!(refuse_link_local("169.254.169.254", 80).await.is_err());
        assert!(refuse_link_local("localhost", 80).await.is_ok());
        assert!(e.to_string().contains("link-local"), "{e}");
        assert!(!resolve_reachable("localhost", 80).await.unwrap().is_empty());
    }
}
