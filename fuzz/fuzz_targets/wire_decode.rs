//! The wire decoder and the sealed-datagram opener: any bytes from the
//! network are refused or decoded, never a panic.
#![no_main]

use astrolabe::transport::keyring::{GossipSecurity, Key, Keyring};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = astrolabe::transport::decode(data, 1400);
    let _ = astrolabe::transport::unseal(None, 0, data, 1400);
    let ring = Keyring::new(vec![Key::from_bytes([7; 32])]).expect("one key");
    let sec = GossipSecurity::new(ring.clone(), None, 60_000);
    let _ = astrolabe::transport::unseal(Some(&sec), 1_000_000, data, 1400);
    // Sealed with the cluster key, the bytes reach the decoder inside.
    let sealed = ring.seal(1_000_000, [9; 16], data);
    if let Ok(plain) = astrolabe::transport::unseal(Some(&sec), 1_000_000, &sealed, 65_536) {
        assert_eq!(&plain[..], data);
        let _ = astrolabe::transport::decode(&plain, 65_536);
    }
});
