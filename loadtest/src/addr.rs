//! The addresses loadtest may talk to: loopback only, given as an address or a name
//! (`localhost:8080`).

use std::net::SocketAddr;

/// `host:port` resolved to a loopback address; anything that resolves elsewhere is refused.
pub fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("{text:?} is not a host:port this machine resolves: {e}"))?
        .collect();
    match resolved.iter().find(|addr| addr.is_ipv4()).or(resolved.first()) {
        Some(addr) if resolved.iter().all(|a| a.ip().is_loopback()) => Ok(*addr),
        _ => Err(format!("loadtest only talks to loopback addresses; {text} is not one")),
    }
}

#[cfg(test)]
mod tests {
    use super::loopback_addr;

    /// Names that resolve to loopback are accepted (as their address); others are refused.
    #[test]
    fn only_loopback_addresses() {
        assert_eq!(loopback_addr("localhost:8080").map(|a| (a.ip().is_loopback(), a.port())), Ok((true, 8080)));
        assert_eq!(loopback_addr("127.0.0.1:9090").map(|a| a.port()), Ok(9090));
        assert!(loopback_addr("10.1.2.3:8080").unwrap_err().contains("only talks to loopback"));
        assert!(loopback_addr("no-port").is_err());
    }
}
