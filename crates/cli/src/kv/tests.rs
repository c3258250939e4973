//! Tests of the key/value commands' parsing: endpoints, listen addresses, base64.

use super::serve::listen_address;
use super::{base64, listen_of, parse_endpoint};

#[test]
fn base64_follows_the_rfc_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
    }
}

/// Issue 19: `localhost` in a node's URL listened on 0.0.0.0, every
/// interface, although the help said the URL's host.
#[test]
fn a_node_listens_on_exactly_the_host_it_is_given() {
    assert_eq!(
        listen_of("http://localhost:7701").unwrap(),
        "127.0.0.1:7701".parse().unwrap()
    );
    assert_eq!(
        listen_of("http://10.1.2.3:7701/").unwrap(),
        "10.1.2.3:7701".parse().unwrap()
    );
    assert_eq!(
        listen_address("0.0.0.0:7701").unwrap(),
        "0.0.0.0:7701".parse().unwrap()
    );
    assert_eq!(
        listen_address("[::1]:7701").unwrap(),
        "[::1]:7701".parse().unwrap()
    );
    assert!(listen_of("http://localhost").is_err());
    let error = listen_address("no-such-host.invalid:7701").unwrap_err();
    assert!(format!("{error:#}").contains("cannot resolve"), "{error:#}");
}

#[test]
fn endpoints_are_checked_when_the_command_line_is_read() {
    assert!(parse_endpoint("http://127.0.0.1:7701").is_ok());
    assert!(parse_endpoint("127.0.0.1:7701").is_ok());
    assert!(parse_endpoint("localhost:7701/").is_ok());
    for bad in [
        "nonsense",
        "127.0.0.1:99999",
        "ftp://127.0.0.1:7701",
        ":7701",
        "host:0",
    ] {
        let error = parse_endpoint(bad).unwrap_err();
        assert!(!error.is_empty(), "{bad}");
    }
}
