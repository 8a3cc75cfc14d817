//! Free loopback ports, handed out at most once at a time within a process.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The port of the shared development Redis; never handed out.
const RESERVED_PORT: u16 = 6379;

/// Ports of live servers started by this process, so that two servers in
/// the same test binary never race for the same port.
static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn ports_in_use() -> MutexGuard<'static, Option<HashSet<u16>>> {
    PORTS_IN_USE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Picks a free loopback port by binding port 0, and reserves it within
/// this process until [`release_port`].
pub(crate) fn reserve_free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read the bound port: {e}"))
            .port();
        drop(listener);
        if port == RESERVED_PORT {
            continue;
        }
        if ports_in_use().get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("cannot find a free loopback port");
}

/// Makes `port` available to [`reserve_free_port`] again.
pub(crate) fn release_port(port: u16) {
    if let Some(ports) = ports_in_use().as_mut() {
        ports.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_unique_until_released() {
        let ports: Vec<u16> = (0..50).map(|_| reserve_free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(!unique.contains(&RESERVED_PORT));
        for port in ports {
            release_port(port);
        }
    }
}
